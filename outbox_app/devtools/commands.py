"""The dev tools' commands: ``outbox-app dev``, ``bench`` and ``soak`` (their options here,
their work in ``dev``, ``bench`` and ``soak``, imported only when one runs)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any, TypeVar

from outbox_app.errors import OutboxError
from outbox_app.settings import Settings

T = TypeVar("T", int, float)

BROKER_HELP = (
    "kafka: Apache Kafka nodes started for the run (needs Java 17); tansu: the embedded broker"
)


def add_commands(sub: Any) -> None:
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
    p.add_argument(
        "--live-rate",
        type=_numbers(float),
        default=(500.0,),
        metavar="N[,N..]",
        help="events/s of the live phase (default 500); more rates: a p50/p99 each",
    )
    p.add_argument("--live-seconds", type=float, default=30.0, help="length of the live phase")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument(
        "--scale",
        type=_numbers(int),
        default=(),
        metavar="N[,N..]",
        help="drain again with N workers each (e.g. 2,4), beside the first drain",
    )
    p.add_argument(
        "--split-roles",
        action="store_true",
        help="drain again with one relay-only and one consume-only worker (OUTBOX_ROLES)",
    )
    p.add_argument(
        "--partitions", type=int, default=4, help="partitions of the service topics (default 4)"
    )
    p.add_argument("--database-url", help="default: a fresh MariaDB database on 127.0.0.1:3306")
    p.add_argument(
        "--broker",
        choices=("kafka", "tansu"),
        default=None,
        help=f"{BROKER_HELP} (default: kafka where Java is installed)",
    )
    p.add_argument("--broker-url", help="a running broker instead of one started for the run")
    p.add_argument("--json", dest="json_path", metavar="PATH", help="also write the figures here")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser(
        "soak",
        help="fault-injection soak: nothing lost, nothing doubled; prints one SOAK line",
        description="Runs a producer, workers and a fault schedule against a private MariaDB "
        "server and brokers it starts itself, waits for the backlog to drain, then checks "
        "every committed event. Exits 1 when anything was lost or doubled or another "
        "invariant broke.",
    )
    p.add_argument("--seconds", type=float, default=60.0, help="producing time (default 60)")
    p.add_argument("--rate", type=float, default=300.0, help="events/s offered (default 300)")
    p.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    p.add_argument(
        "--broker",
        choices=("kafka-cluster", "kafka", "tansu"),
        default="kafka-cluster",
        help="kafka-cluster: three Kafka brokers, topics with replication factor 3 and "
        "min.insync.replicas=2 (the default); kafka: one Kafka broker; tansu: the embedded "
        "broker, in memory",
    )
    p.add_argument(
        "--faults",
        default="all",
        help="comma list of kill,stop,broker-kill,broker-bounce (Kafka) or broker (Tansu),"
        "dbconn,dbrestart,handler,poison; all or none (default all)",
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


def _numbers(kind: type[T]) -> Callable[[str], tuple[T, ...]]:
    """A comma list of numbers, for argparse."""

    def parse(raw: str) -> tuple[T, ...]:
        try:
            values = tuple(kind(part) for part in raw.split(",") if part.strip())  # type: ignore[call-arg]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected numbers such as 1,2,4, got {raw!r}"
            ) from None
        if not values:
            raise argparse.ArgumentTypeError("expected at least one number")
        return values

    return parse


def cmd_bench(ns: argparse.Namespace) -> int:
    from outbox_app.devtools.bench import BenchConfig, run_bench
    from outbox_app.devtools.kafka import java_available

    counts = (ns.workers, ns.partitions, *ns.scale)
    if ns.n < 1 or min(counts) < 1 or min(ns.live_rate) < 0 or ns.live_seconds < 0:
        raise OutboxError(
            "--n, --workers, --scale and --partitions must be at least 1; rates and times "
            "not negative"
        )
    broker = ns.broker or ("kafka" if java_available() else "tansu")
    result = run_bench(
        BenchConfig(
            n=ns.n,
            write_tx=ns.write_tx,
            live_rate=ns.live_rate[0],
            more_live_rates=tuple(ns.live_rate[1:]),
            live_seconds=ns.live_seconds,
            workers=ns.workers,
            scale=tuple(ns.scale),
            split_roles=ns.split_roles,
            partitions=ns.partitions,
            database_url=ns.database_url,
            broker=broker,
            broker_url=ns.broker_url,
            json_path=ns.json_path,
        )
    )
    return 0 if result.lost == 0 and result.doubled == 0 else 1


def cmd_soak(ns: argparse.Namespace) -> int:
    from outbox_app.devtools.soak import SoakConfig, parse_faults, run_soak

    try:
        faults = parse_faults(ns.faults, ns.broker)
    except ValueError as exc:
        raise OutboxError(str(exc)) from None
    if ns.seconds <= 0 or ns.rate <= 0 or ns.workers < 2 or ns.fault_interval <= 0:
        raise OutboxError("--seconds, --rate and --fault-interval must be positive; --workers >= 2")
    result = run_soak(
        SoakConfig(
            seconds=ns.seconds,
            rate=ns.rate,
            workers=ns.workers,
            broker=ns.broker,
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
