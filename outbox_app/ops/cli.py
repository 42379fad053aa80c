"""``outbox-app``: the worker, operator commands (``ops.commands``) and the dev tools'
commands (``devtools.commands``: dev, bench, soak)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence

from outbox_app import __version__
from outbox_app.errors import ConfigurationError, OutboxError
from outbox_app.settings import Settings

# Options whose value may start with "-" (argparse would take "-5s" for an option and
# answer "expected one argument"): joined to their value, so the value's own check speaks.
VALUE_OPTIONS = ("--older-than", "--offset", "--limit", "--id", "--batch", "--signature")


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "worker":
        try:
            return run_worker(args[1:])
        except OutboxError as exc:  # a setting or a handler registration that cannot work
            print(f"outbox-app: error: {exc}", file=sys.stderr)
            return 2
    parser = build_parser()
    ns = parser.parse_args(join_option_values(args))
    if not getattr(ns, "func", None):
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(ns.func(ns) or 0)
    except OutboxError as exc:
        print(f"outbox-app: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # `outbox-app dead show ... | head`: the reader has what it wanted. Quietly, as
        # other commands in a pipe do (and no second error while Python flushes stdout).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE


def join_option_values(args: list[str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in VALUE_OPTIONS and i + 1 < len(args) and args[i + 1].startswith("-"):
            out.append(f"{arg}={args[i + 1]}")
            i += 2
            continue
        out.append(arg)
        i += 1
    return out


FAUST_GLOBAL_FLAGS = ("--debug", "--no-debug", "--quiet", "-q", "--no-color", "--json")


def run_worker(faust_args: list[str]) -> int:
    """A Faust worker (``faust -A outbox_app.app worker``); extra arguments go to Faust."""
    try:
        import faust  # noqa: F401 - only to say clearly what is missing
    except ImportError:
        raise ConfigurationError(
            "the worker needs the worker extra: pip install 'outbox-app[worker,mysql]'"
        ) from None
    from outbox_app.worker.app import build_app

    settings = Settings.from_env()
    app = build_app(settings)
    if not any(a in ("-l", "--loglevel") or a.startswith("--loglevel=") for a in faust_args):
        faust_args = ["-l", settings.log_level, *faust_args]
    # Faust's global options go before the command: `outbox-app worker --debug ...` works.
    global_opts = [a for a in faust_args if a in FAUST_GLOBAL_FLAGS]
    worker_opts = [a for a in faust_args if a not in FAUST_GLOBAL_FLAGS]
    sys.argv = ["outbox-app", *global_opts, "worker", *worker_opts]
    app.main()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="outbox-app",
        description="Transactional outbox on Faust. `outbox-app worker [faust options]` runs "
        "a worker; the commands below operate it. Settings come from OUTBOX_* variables.",
    )
    parser.add_argument("--version", action="version", version=f"outbox-app {__version__}")
    sub = parser.add_subparsers(metavar="command")
    sub.add_parser("worker", help="run a Faust worker (options are passed to Faust)")

    from outbox_app.devtools import commands as devtools
    from outbox_app.ops import commands, schema_commands

    devtools.add_commands(sub)
    commands.add_commands(sub)
    schema_commands.add_commands(sub)
    return parser


if __name__ == "__main__":
    raise SystemExit(main())
