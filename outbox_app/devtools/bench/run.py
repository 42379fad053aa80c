"""A bench run from start to BENCH line: a fresh database and broker, the limits, then the
outbox's phases with its workers."""

from __future__ import annotations

import asyncio
import functools
import json
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from outbox_app.database import make_engine
from outbox_app.devtools.bench.config import (
    BENCH_HANDLER_MODULES,
    ORDERED_KEYS,
    BenchConfig,
    BenchResult,
    Progress,
)
from outbox_app.devtools.bench.handlers import ORDERED_EVENT, ORDERED_SERVICE
from outbox_app.devtools.bench.limits import db_limit, faust_limit, kafka_limit
from outbox_app.devtools.bench.measure import DrainCost, OwnStatements
from outbox_app.devtools.bench.phases import Outbox
from outbox_app.devtools.bench.workers import Workers
from outbox_app.registry import Registry, default_registry
from outbox_app.schema import create_schema

DEFAULT_MYSQL = "mysql+mysqldb://root@127.0.0.1:3306/"


@contextmanager
def bench_database(url: str | None) -> Iterator[str]:
    if url:
        yield url
        return
    name = f"outbox_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(DEFAULT_MYSQL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
    try:
        yield make_url(DEFAULT_MYSQL).set(database=name).render_as_string(False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
        admin.dispose()


@contextmanager
def bench_broker(cfg: BenchConfig, tmp: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """(broker URL, worker settings it needs): a running one, or one started here."""
    if cfg.broker_url:
        yield cfg.broker_url, {"OUTBOX_BROKER_URL": cfg.broker_url}
        return
    if cfg.broker == "tansu":
        from outbox_app.devtools.tansu import TANSU_TOPIC_RECHECK, TansuProcess

        tansu = TansuProcess()
        tansu.start()
        try:
            yield (
                tansu.url,
                {
                    "OUTBOX_BROKER_URL": tansu.url,
                    "OUTBOX_TOPIC_RECHECK_INTERVAL": TANSU_TOPIC_RECHECK,
                },
            )
        finally:
            tansu.close()
        return
    from outbox_app.devtools.kafka import KafkaCluster

    cluster = KafkaCluster(tmp / "kafka", nodes=1, heap="1g").start()
    try:
        yield cluster.url, {"OUTBOX_BROKER_URL": cluster.url}
    finally:
        cluster.close(keep=False)


def run(cfg: BenchConfig) -> BenchResult:
    registry = default_registry
    registry.load_modules(BENCH_HANDLER_MODULES.split(","))
    progress = Progress()
    tmp = Path(tempfile.mkdtemp(prefix="outbox-bench-"))
    broker_name = "url" if cfg.broker_url else cfg.broker
    result = BenchResult(
        n=cfg.n,
        workers=cfg.workers,
        broker=broker_name,
        live_rate=cfg.live_rate,
        partitions=cfg.partitions,
    )
    workers = Workers(tmp, cfg.timeout)
    prefix = f"{workers.app_id}."
    with bench_database(cfg.database_url) as url, bench_broker(cfg, tmp) as (broker_url, env):
        # Topics of this run only: a broker given by --broker-url keeps earlier runs'
        # records, whose outbox ids a fresh database hands out again.
        env = {
            **env,
            "OUTBOX_TOPIC_PARTITIONS": str(cfg.partitions),
            "OUTBOX_TOPIC_PREFIX": prefix,
        }
        engine = make_engine(url, pool_size=8)
        own = OwnStatements(engine)
        try:
            create_schema(engine, registry.routes(), registry.metadata)
            outbox = Outbox(engine, registry, progress, prefix=prefix)
            limits(cfg, result, engine, broker_url, env, progress)
            result.write_tps = outbox.write(cfg.write_tx)
            progress.done("write", f"{result.write_tps:.0f} business tx/s via publish()")
            started = time.monotonic()
            workers.start(cfg.workers, url, env)
            outbox.first_event(workers)
            result.start_s = time.monotonic() - started
            progress.done("start", f"first event consumed {result.start_s:.1f}s after start")
            meter = functools.partial(DrainCost, engine, own)  # of the given processes
            cost = meter(workers.pids)
            result.drain_eps = outbox.drain(cfg.n, workers, cost)
            result.cpu_us_per_event = cost.cpu_us_per_event
            result.db_round_trips_per_event = cost.round_trips_per_event
            # Where the rest of the machine went: the database server's share (when it
            # runs here) and what stayed idle (near 0: the machine, not the worker, capped
            # the figure).
            elsewhere = ""
            if cost.db_cpu_us_per_event is not None:
                result.extra["db_cpu_us_per_event"] = round(cost.db_cpu_us_per_event)
                elsewhere += f"; the database server {cost.db_cpu_us_per_event:.0f} us"
            if cost.idle_share is not None:
                result.extra["drain_idle_share"] = round(cost.idle_share, 2)
                elsewhere += f"; machine idle {cost.idle_share:.0%}"
            limit = min(result.kafka_limit_eps, result.db_limit_eps)
            result.drain_vs_limit = result.drain_eps / limit if limit else 0.0
            faust = result.faust_limit_eps
            result.drain_vs_faust = result.drain_eps / faust if faust else 0.0
            progress.done(
                "drain",
                f"{result.drain_eps:.0f} events/s ({result.drain_vs_faust:.2f} of the empty "
                f"agent), {result.cpu_us_per_event:.0f} us CPU and "
                f"{result.db_round_trips_per_event:.2f} statements per event{elsewhere}",
            )
            bootstrap = broker_url.replace("kafka://", "").replace(";", ",")
            live_phases(cfg, result, outbox, workers, progress, bootstrap)
            ordered_phases(cfg, result, engine, registry, workers, progress, prefix)
            scale_phases(cfg, result, outbox, workers, url, env, progress, meter)
            lost, doubled = outbox.verify()
            o_lost, o_doubled = Outbox(
                engine, registry, progress, ORDERED_SERVICE, ORDERED_EVENT,
                effects="bench_ordered_effects", prefix=prefix,
            ).verify()  # fmt: skip
            result.lost, result.doubled = lost + o_lost, doubled + o_doubled
        finally:
            workers.stop()
            engine.dispose()
    shutil.rmtree(tmp, ignore_errors=True)  # kept when a phase failed: worker logs
    return result


def limits(
    cfg: BenchConfig,
    result: BenchResult,
    engine: Engine,
    broker_url: str,
    env: dict[str, str],
    progress: Progress,
) -> None:
    """The ceilings, measured before the outbox runs: raw Kafka, the empty Faust agent on
    the same records, raw database commits."""
    bootstrap = broker_url.replace("kafka://", "").replace(";", ",")
    result.kafka_limit_eps, topic = asyncio.run(
        kafka_limit(bootstrap, cfg.n, progress, cfg.partitions)
    )
    result.faust_limit_eps = faust_limit(topic, cfg.n, env, cfg.timeout)
    result.db_limit_eps = db_limit(engine, cfg.n, progress)
    progress.done(
        "limits",
        f"kafka {result.kafka_limit_eps:.0f} msg/s, empty Faust agent "
        f"{result.faust_limit_eps:.0f} events/s, database {result.db_limit_eps:.0f} rows/s",
    )


def live_phases(
    cfg: BenchConfig,
    result: BenchResult,
    outbox: Outbox,
    workers: Workers,
    progress: Progress,
    bootstrap: str,
) -> None:
    for k, rate in enumerate((cfg.live_rate, *cfg.more_live_rates)):
        live = outbox.live(rate, cfg.live_seconds, workers, bootstrap)
        if not live.latencies_ms:
            continue
        qs = statistics.quantiles(live.latencies_ms, n=100, method="inclusive")
        # What the workers and the machine spent at this rate: whether a latency is ours
        # or a saturated machine's.
        at = "" if k == 0 else f"_at_{rate:g}"
        result.extra[f"live_cpu_us_per_event{at}"] = round(live.cpu_us_per_event)
        if live.idle_share is not None:
            result.extra[f"live_idle_share{at}"] = round(live.idle_share, 2)
        if k == 0:
            result.p50_ms, result.p95_ms, result.p99_ms = qs[49], qs[94], qs[98]
            result.max_ms = max(live.latencies_ms)
            result.live_rate = live.rate
            result.load_cpu_share = round(live.load_cpu_share, 2)
            result.extra["live_relay_p50_ms"] = round(live.relay_p50_ms, 1)
            result.extra.update(live.legs.medians())
        else:
            tag = f"{rate:g}"
            result.extra[f"p50_ms_at_{tag}"] = round(qs[49], 1)
            result.extra[f"p99_ms_at_{tag}"] = round(qs[98], 1)
            result.extra[f"load_cpu_share_at_{tag}"] = round(live.load_cpu_share, 2)
        progress.done(
            "live",
            f"{live.rate:.0f} events/s: p50 {qs[49]:.1f} ms, p99 {qs[98]:.1f} ms (commit to "
            f"acked and marked published: p50 {live.relay_p50_ms:.1f} ms; load generator "
            f"{live.load_cpu_share:.2f} of a core; workers {live.cpu_us_per_event:.0f} us CPU "
            f"per event) {live.legs.medians()}",
        )


def ordered_phases(
    cfg: BenchConfig,
    result: BenchResult,
    engine: Engine,
    registry: Registry,
    workers: Workers,
    progress: Progress,
    prefix: str,
) -> None:
    ordered = Outbox(
        engine, registry, progress, ORDERED_SERVICE, ORDERED_EVENT,
        effects="bench_ordered_effects", prefix=prefix,
    )  # fmt: skip
    many, few = (ordered.with_keys(k) for k in ORDERED_KEYS)
    result.ordered_drain_eps = many.drain(cfg.n, workers)
    result.ordered_10_keys_drain_eps = few.drain(cfg.n, workers)
    share = result.ordered_drain_eps / result.drain_eps if result.drain_eps else 0.0
    result.extra["ordered_vs_unordered"] = round(share, 2)
    progress.done(
        "ordered",
        f"drain {result.ordered_drain_eps:.0f} events/s over {ORDERED_KEYS[0]} keys "
        f"({share:.2f} of unordered), {result.ordered_10_keys_drain_eps:.0f} over "
        f"{ORDERED_KEYS[1]} keys",
    )
    live = many.live(cfg.live_rate, cfg.live_seconds, workers)
    if live.latencies_ms:
        qs = statistics.quantiles(live.latencies_ms, n=100, method="inclusive")
        result.ordered_p50_ms, result.ordered_p99_ms = qs[49], qs[98]
    progress.done(
        "ordered",
        f"live p50 {result.ordered_p50_ms:.1f} ms, p99 {result.ordered_p99_ms:.1f} ms",
    )


def scale_phases(
    cfg: BenchConfig,
    result: BenchResult,
    outbox: Outbox,
    workers: Workers,
    url: str,
    env: dict[str, str],
    progress: Progress,
    meter: Callable[[list[int]], DrainCost],
) -> None:
    """The drain again with other worker counts (same group, same topic), then, with
    ``--split-roles``, with the relay and the consumer in two processes (each with a GIL
    of its own) and what the pair spent per event; each against the first drain."""

    def restart(*starts: tuple[int, str | None]) -> None:
        workers.stop()
        for count, roles in starts:
            workers.start(count, url, env, roles)
        outbox.first_event(workers)

    def against_first(eps: float) -> float:
        return eps / result.drain_eps if result.drain_eps else 0.0

    for count in cfg.scale:
        restart((count, None))
        eps = outbox.drain(cfg.n, workers)
        ratio = against_first(eps)
        result.extra[f"drain_eps_w{count}"] = round(eps)
        result.extra[f"scale_w{count}"] = round(ratio, 2)
        progress.done("scale", f"{count} workers: {eps:.0f} events/s ({ratio:.2f}x)")
    if cfg.split_roles:
        restart((1, "relay"), (1, "consume"))
        cost = meter(workers.pids)
        eps = outbox.drain(cfg.n, workers, cost)
        ratio = against_first(eps)
        result.extra["drain_eps_split"] = round(eps)
        result.extra["scale_split"] = round(ratio, 2)
        result.extra["cpu_us_per_event_split"] = round(cost.cpu_us_per_event)
        progress.done(
            "split",
            f"a relay-only and a consume-only worker: {eps:.0f} events/s ({ratio:.2f}x), "
            f"{cost.cpu_us_per_event:.0f} us CPU per event between them",
        )


def run_bench(config: BenchConfig) -> BenchResult:
    result = run(config)
    if config.json_path:
        Path(config.json_path).write_text(json.dumps(asdict(result), indent=2) + "\n")
    print(result.line(), flush=True)
    return result
