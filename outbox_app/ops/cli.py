"""``outbox-app``: the worker, the embedded dev run, and operator commands."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from outbox_app.errors import OutboxError
from outbox_app.settings import Settings


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


FAUST_GLOBAL_FLAGS = ("--debug", "--no-debug", "--quiet", "-q", "--no-color", "--json")


def run_worker(faust_args: list[str]) -> int:
    """A Faust worker (``faust -A outbox_app.app worker``); extra arguments go to Faust."""
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
    sub = parser.add_subparsers(metavar="command")
    sub.add_parser("worker", help="run a Faust worker (options are passed to Faust)")

    p = sub.add_parser(
        "dev",
        help="run everything locally: SQLite and an embedded broker unless configured",
    )
    p.add_argument(
        "--demo-rate",
        type=float,
        default=0.0,
        metavar="N",
        help="publish realistic demo traffic at about N events/s",
    )
    p.add_argument("--web-port", type=int, default=None, help="web view port (OUTBOX_WEB_PORT)")
    p.set_defaults(func=cmd_dev)

    p = sub.add_parser("bench", help="measure throughput and latency; prints one BENCH line")
    p.add_argument("--n", type=int, default=50_000, help="drain backlog size (default 50000)")
    p.add_argument(
        "--write-tx",
        type=int,
        default=2_000,
        help="business transactions in the write phase (default 2000)",
    )
    p.add_argument("--live-rate", type=float, default=500.0, help="events/s in the live phase")
    p.add_argument("--live-seconds", type=float, default=30.0, help="length of the live phase")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--database-url", help="default: a fresh MariaDB database on 127.0.0.1:3306")
    p.add_argument("--broker-url", help="default: a Tansu broker started for the run")
    p.add_argument("--json", dest="json_path", metavar="PATH", help="also write the figures here")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser(
        "soak",
        help="fault-injection soak: nothing lost, nothing doubled; prints one SOAK line",
        description="Runs a producer, workers and a fault schedule against a private MariaDB "
        "server and a Tansu broker it starts itself, waits for the backlog to drain, then "
        "checks every committed event. Exits 1 when anything was lost or doubled or another "
        "invariant broke.",
    )
    p.add_argument("--seconds", type=float, default=60.0, help="producing time (default 60)")
    p.add_argument("--rate", type=float, default=300.0, help="events/s offered (default 300)")
    p.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    p.add_argument(
        "--faults",
        default="all",
        help="comma list of kill,stop,broker,dbconn,dbrestart,handler,poison; all or none "
        "(default all)",
    )
    p.add_argument(
        "--fault-interval",
        type=float,
        default=5.0,
        help="mean seconds between two faults (default 5)",
    )
    p.add_argument(
        "--handler-failure-rate",
        type=float,
        default=0.3,
        help="chance that a soak.flaky attempt fails (fault 'handler'; default 0.3)",
    )
    p.add_argument(
        "--rollback-share",
        type=float,
        default=0.05,
        help="share of business transactions rolled back on purpose (default 0.05)",
    )
    p.add_argument(
        "--mysql-url",
        help="use this running MariaDB (its root URL) instead of a private server; "
        "'dbrestart' then restarts the machine's server, at most --db-restarts times",
    )
    p.add_argument(
        "--db-restarts",
        type=int,
        default=None,
        help="most database restarts (default: unlimited on the private server, 2 otherwise)",
    )
    p.add_argument("--drain-target", type=float, default=30.0, help="seconds (default 30)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    p.add_argument("--json", dest="json_path", metavar="PATH", help="also write the result here")
    p.add_argument(
        "--keep", action="store_true", help="keep the logs and the database files afterwards"
    )
    p.set_defaults(func=cmd_soak)

    from outbox_app.ops import commands

    commands.add_commands(sub)
    return parser


def cmd_bench(ns: argparse.Namespace) -> int:
    from outbox_app.devtools.bench import BenchConfig, run_bench

    if ns.n < 1 or ns.workers < 1 or ns.live_rate < 0 or ns.live_seconds < 0:
        raise OutboxError("--n and --workers must be at least 1; rates and times not negative")
    result = run_bench(
        BenchConfig(
            n=ns.n,
            write_tx=ns.write_tx,
            live_rate=ns.live_rate,
            live_seconds=ns.live_seconds,
            workers=ns.workers,
            database_url=ns.database_url,
            broker_url=ns.broker_url,
            json_path=ns.json_path,
        )
    )
    return 0 if result.lost == 0 and result.doubled == 0 else 1


def cmd_soak(ns: argparse.Namespace) -> int:
    from outbox_app.devtools.soak import SoakConfig, parse_faults, run_soak

    try:
        faults = parse_faults(ns.faults)
    except ValueError as exc:
        raise OutboxError(str(exc)) from None
    if ns.seconds <= 0 or ns.rate <= 0 or ns.workers < 2 or ns.fault_interval <= 0:
        raise OutboxError("--seconds, --rate and --fault-interval must be positive; --workers >= 2")
    result = run_soak(
        SoakConfig(
            seconds=ns.seconds,
            rate=ns.rate,
            workers=ns.workers,
            faults=faults,
            fault_interval=ns.fault_interval,
            handler_failure_rate=ns.handler_failure_rate,
            rollback_share=ns.rollback_share,
            mysql_url=ns.mysql_url,
            db_restarts=ns.db_restarts,
            drain_target=ns.drain_target,
            seed=ns.seed,
            json_path=ns.json_path,
            keep=ns.keep,
        )
    )
    return 0 if result.ok else 1


def cmd_dev(ns: argparse.Namespace) -> int:
    from outbox_app.devtools.dev import DevRun

    port = ns.web_port or Settings.from_env().web_port
    return DevRun(demo_rate=ns.demo_rate, web_port=port).run()


if __name__ == "__main__":
    raise SystemExit(main())
