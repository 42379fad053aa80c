"""A bench run from start to BENCH line: a fresh database and broker, the limits, then the
outbox's phases with its workers."""

from __future__ import annotations

import asyncio
import json
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

from sqlalchemy import create_engine, text
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
from outbox_app.devtools.bench.limits import db_limit, kafka_limit
from outbox_app.devtools.bench.phases import Outbox
from outbox_app.devtools.bench.workers import Workers
from outbox_app.registry import default_registry
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
    result = BenchResult(n=cfg.n, workers=cfg.workers, broker=broker_name, live_rate=cfg.live_rate)
    workers = Workers(tmp, cfg.timeout)
    with bench_database(cfg.database_url) as url, bench_broker(cfg, tmp) as (broker_url, env):
        engine = make_engine(url, pool_size=8)
        try:
            create_schema(engine, registry.routes(), registry.metadata)
            outbox = Outbox(engine, registry, progress)
            bootstrap = broker_url.replace("kafka://", "").replace(";", ",")
            result.kafka_limit_eps = asyncio.run(kafka_limit(bootstrap, cfg.n, progress))
            result.db_limit_eps = db_limit(engine, cfg.n, progress)
            progress.done(
                "limits",
                f"kafka {result.kafka_limit_eps:.0f} msg/s, "
                f"database {result.db_limit_eps:.0f} rows/s",
            )
            result.write_tps = outbox.write(cfg.write_tx)
            progress.done("write", f"{result.write_tps:.0f} business tx/s via publish()")
            started = time.monotonic()
            workers.start(cfg.workers, url, env)
            outbox.first_event(workers)
            result.start_s = time.monotonic() - started
            progress.done("start", f"first event consumed {result.start_s:.1f}s after start")
            result.drain_eps = outbox.drain(cfg.n, workers)
            limit = min(result.kafka_limit_eps, result.db_limit_eps)
            result.drain_vs_limit = result.drain_eps / limit if limit else 0.0
            progress.done(
                "drain", f"{result.drain_eps:.0f} events/s ({result.drain_vs_limit:.2f} of limit)"
            )
            live = outbox.live(cfg.live_rate, cfg.live_seconds, workers)
            if live.latencies_ms:
                qs = statistics.quantiles(live.latencies_ms, n=100, method="inclusive")
                result.p50_ms, result.p95_ms, result.p99_ms = qs[49], qs[94], qs[98]
                result.max_ms = max(live.latencies_ms)
                result.live_rate = live.rate
            result.extra["live_relay_p50_ms"] = round(live.relay_p50_ms, 1)
            progress.done(
                "live",
                f"p50 {result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms "
                f"(commit to acked and marked published: p50 {live.relay_p50_ms:.1f} ms)",
            )
            ordered = Outbox(
                engine, registry, progress, ORDERED_SERVICE, ORDERED_EVENT,
                effects="bench_ordered_effects",
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
            lost, doubled = outbox.verify()
            o_lost, o_doubled = ordered.verify()
            result.lost, result.doubled = lost + o_lost, doubled + o_doubled
        finally:
            workers.stop()
            engine.dispose()
    shutil.rmtree(tmp, ignore_errors=True)  # kept when a phase failed: worker logs
    return result


def run_bench(config: BenchConfig) -> BenchResult:
    result = run(config)
    if config.json_path:
        Path(config.json_path).write_text(json.dumps(asdict(result), indent=2) + "\n")
    print(result.line(), flush=True)
    return result
