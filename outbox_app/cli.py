"""``outbox-app``: the worker, the embedded dev run, and operator commands."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

from .errors import OutboxError
from .settings import Settings


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "worker":
        return run_worker(args[1:])
    parser = build_parser()
    ns = parser.parse_args(args)
    if not getattr(ns, "func", None):
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(ns.func(ns) or 0)
    except OutboxError as exc:
        print(f"outbox-app: error: {exc}", file=sys.stderr)
        return 2


def run_worker(faust_args: list[str]) -> int:
    """A Faust worker (``faust -A outbox_app.app worker``); extra arguments go to Faust."""
    from .app import build_app

    settings = Settings.from_env()
    app = build_app(settings)
    if not any(a in ("-l", "--loglevel") or a.startswith("--loglevel=") for a in faust_args):
        faust_args = ["-l", settings.log_level, *faust_args]
    sys.argv = ["outbox-app", "worker", *faust_args]
    app.main()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="outbox-app",
        description="Transactional outbox on Faust. `outbox-app worker [faust options]` runs "
        "a worker; the commands below operate it. Settings come from OUTBOX_* variables.",
    )
    sub = parser.add_subparsers(metavar="command")
    sub.add_parser("worker", help="run a Faust worker (options are passed to Faust)")

    p = sub.add_parser("stats", help="rows per service and status")
    p.add_argument("--json", action="store_true", help="the JSON document of /outbox/stats/")
    p.set_defaults(func=cmd_stats)
    return parser


def operator_context() -> Any:
    from .operations import Operations

    return Operations.from_env()


def cmd_stats(ns: argparse.Namespace) -> int:
    ops = operator_context()
    doc = ops.stats()
    if ns.json:
        print(json.dumps(doc, indent=2))
        return 0
    rows = [
        [name, c["pending"], c["published"], c["consumed"], c["dead"], _age(c)]
        for name, c in doc["services"].items()
    ]
    print(_table(["service", "pending", "published", "consumed", "dead", "oldest pending"], rows))
    return 0


def _age(counts: dict[str, Any]) -> str:
    age = counts["oldest_pending_age_s"]
    return "-" if age is None else f"{age:.1f}s"


def _table(header: list[str], rows: list[list[Any]]) -> str:
    cells = [header, *[[str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
