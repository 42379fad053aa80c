"""``outbox-app bench``: throughput and latency of the outbox, each beside the raw
ceiling of the same machine measured in the same run.

Phases: *limits* (raw aiokafka produce+consume, raw database commits of the consume
transaction's shape), *write* (business transactions through ``publish()``),
*drain* (a released backlog relayed and consumed by the workers), *live* (a steady
rate; latency from business commit to handler commit). One result line at the end.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from outbox_app.clock import utcnow
from outbox_app.database import make_engine
from outbox_app.devtools.tansu import TANSU_TOPIC_RECHECK, broker_command
from outbox_app.publish import publish
from outbox_app.registry import Registry, default_registry
from outbox_app.schema import create_schema, outbox_table

DEFAULT_MYSQL = "mysql+mysqldb://root@127.0.0.1:3306/"
EVENT = "chat_history.persist"
SERVICE = "agent"
KEYS = 64


@dataclass
class BenchConfig:
    n: int = 50_000
    write_tx: int = 2_000
    live_rate: float = 500.0
    live_seconds: float = 30.0
    workers: int = 1
    database_url: str | None = None
    broker_url: str | None = None
    json_path: str | None = None
    timeout: float = 600.0


@dataclass
class BenchResult:
    n: int
    workers: int
    write_tps: float = 0.0
    drain_eps: float = 0.0
    drain_vs_limit: float = 0.0
    live_rate: float = 0.0
    p50_ms: float = 0.0
    p95_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    start_s: float = 0.0
    lost: int = 0
    doubled: int = 0
    kafka_limit_eps: float = 0.0
    db_limit_eps: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        return (
            f"BENCH n={self.n} workers={self.workers} write_tps={self.write_tps:.0f} "
            f"drain_eps={self.drain_eps:.0f} drain_vs_limit={self.drain_vs_limit:.2f} "
            f"live_rate={self.live_rate:g} p50_ms={self.p50_ms:.1f} p95_ms={self.p95_ms:.1f} "
            f"p99_ms={self.p99_ms:.1f} max_ms={self.max_ms:.1f} start_s={self.start_s:.1f} "
            f"lost={self.lost} doubled={self.doubled} "
            f"kafka_limit_eps={self.kafka_limit_eps:.0f} db_limit_eps={self.db_limit_eps:.0f}"
        )


class Progress:
    """A one-line progress bar on a terminal; silent otherwise."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()

    def update(self, phase: str, done: float, total: float) -> None:
        if not self.tty or total <= 0:
            return
        width = 30
        filled = int(width * min(done / total, 1.0))
        sys.stderr.write(
            f"\r{phase:<7} [{'#' * filled}{'.' * (width - filled)}] {done:>8.0f}/{total:.0f}"
        )
        sys.stderr.flush()

    def done(self, phase: str, summary: str) -> None:
        if self.tty:
            sys.stderr.write("\r" + " " * 70 + "\r")
        print(f"{phase:<7} {summary}", file=sys.stderr, flush=True)


def chat(i: int) -> dict[str, Any]:
    return {
        "user_id": i % 1000,
        "conversation_id": f"conv-{i % KEYS}",
        "role": "user" if i % 2 else "assistant",
        "message": f"benchmark message {i}: the quick brown fox jumps over the lazy dog",
    }


class Bench:
    def __init__(self, config: BenchConfig) -> None:
        self.cfg = config
        self.progress = Progress()
        self.registry: Registry = default_registry
        self.tmp = Path(tempfile.mkdtemp(prefix="outbox-bench-"))
        self.workers: list[subprocess.Popen[bytes]] = []
        self.live_relay_p50_ms = 0.0

    # -- set-up ------------------------------------------------------------------------
    @contextmanager
    def database(self) -> Iterator[str]:
        if self.cfg.database_url:
            yield self.cfg.database_url
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
    def broker(self) -> Iterator[str]:
        if self.cfg.broker_url:
            yield self.cfg.broker_url
            return
        from outbox_app.devtools.ports import free_port, wait_port

        port = free_port()
        proc = subprocess.Popen(
            broker_command(port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            if not wait_port(port, 20):
                raise RuntimeError(f"the broker did not listen on port {port}")
            yield f"kafka://127.0.0.1:{port}"
        finally:
            proc.kill()
            proc.wait(10)

    # -- phases ------------------------------------------------------------------------
    def run(self) -> BenchResult:
        self.registry.load_modules(["handlers"])
        result = BenchResult(n=self.cfg.n, workers=self.cfg.workers, live_rate=self.cfg.live_rate)
        with self.database() as url, self.broker() as broker_url:
            engine = make_engine(url, pool_size=8)
            try:
                create_schema(engine, self.registry.routes(), self.registry.metadata)
                bootstrap = broker_url.replace("kafka://", "")
                result.kafka_limit_eps = asyncio.run(self.kafka_limit(bootstrap))
                result.db_limit_eps = self.db_limit(engine)
                self.progress.done(
                    "limits",
                    f"kafka {result.kafka_limit_eps:.0f} msg/s, "
                    f"database {result.db_limit_eps:.0f} rows/s",
                )
                result.write_tps = self.write_phase(engine)
                self.progress.done("write", f"{result.write_tps:.0f} business tx/s via publish()")
                result.start_s = self.start_workers(url, broker_url, engine)
                self.progress.done(
                    "start", f"first event consumed {result.start_s:.1f}s after start"
                )
                result.drain_eps = self.drain_phase(engine)
                limit = min(result.kafka_limit_eps, result.db_limit_eps)
                result.drain_vs_limit = result.drain_eps / limit if limit else 0.0
                self.progress.done(
                    "drain",
                    f"{result.drain_eps:.0f} events/s ({result.drain_vs_limit:.2f} of limit)",
                )
                latencies = self.live_phase(engine)
                if latencies:
                    qs = statistics.quantiles(latencies, n=100, method="inclusive")
                    result.p50_ms, result.p95_ms, result.p99_ms = qs[49], qs[94], qs[98]
                    result.max_ms = max(latencies)
                result.extra["live_relay_p50_ms"] = round(self.live_relay_p50_ms, 1)
                self.progress.done(
                    "live",
                    f"p50 {result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms "
                    f"(commit to acked and marked published: p50 {self.live_relay_p50_ms:.1f} ms)",
                )
                result.lost, result.doubled = self.verify(engine)
            finally:
                self.stop_workers()
                engine.dispose()
        shutil.rmtree(self.tmp, ignore_errors=True)  # kept when a phase failed: worker logs
        return result

    async def kafka_limit(self, bootstrap: str) -> float:
        """Raw aiokafka: produce n envelope-sized records and consume them, pipelined."""
        from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic

        n, topic = self.cfg.n, f"bench.limit.{uuid.uuid4().hex[:6]}"
        value = json.dumps({"v": 1, "outbox_id": 1, "payload": chat(1)}).encode()
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(topic, 4, 1)])
        finally:
            await admin.close()
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=50
        )
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=256 * 1024, acks="all"
        )
        await consumer.start()
        await producer.start()
        try:
            tps = [TopicPartition(topic, p) for p in range(4)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            received = 0
            started = time.monotonic()

            async def produce() -> None:
                futures = [
                    await producer.send(topic, value, key=f"conv-{i % KEYS}".encode())
                    for i in range(n)
                ]
                await asyncio.gather(*futures)

            sending = asyncio.create_task(produce())
            while received < n:
                batch = await consumer.getmany(timeout_ms=1000, max_records=5000)
                received += sum(len(v) for v in batch.values())
                self.progress.update("limits", received, n)
            await sending
            return n / (time.monotonic() - started)
        finally:
            await producer.stop()
            await consumer.stop()

    def db_limit(self, engine: Engine) -> float:
        """Raw commits of the consume transaction's shape: lock a batch of outbox rows,
        insert one business row each, mark them consumed, commit."""
        n, batch = self.cfg.n, 500
        md_sql = [
            "CREATE TABLE bench_limit_outbox (id BIGINT PRIMARY KEY, status VARCHAR(16), "
            "payload TEXT, consumed_at DATETIME(6) NULL)",
            "CREATE TABLE bench_limit_effects (id BIGINT AUTO_INCREMENT PRIMARY KEY, "
            "outbox_id BIGINT, user_id BIGINT, conversation_id VARCHAR(64), role VARCHAR(16), "
            "message TEXT, created_at DATETIME(6), KEY (outbox_id))",
        ]
        if engine.dialect.name == "sqlite":
            md_sql = [
                s.replace("DATETIME(6)", "TEXT")
                .replace("AUTO_INCREMENT", "")
                .replace(", KEY (outbox_id)", "")
                for s in md_sql
            ]
        payload = json.dumps(chat(1))
        with engine.begin() as conn:
            for sql in md_sql:
                conn.execute(text(sql))
            for start in range(1, n + 1, 5000):
                conn.execute(
                    text("INSERT INTO bench_limit_outbox VALUES (:id, 'pending', :p, NULL)"),
                    [{"id": i, "p": payload} for i in range(start, min(start + 5000, n + 1))],
                )
        now = "UTC_TIMESTAMP(6)" if engine.dialect.name != "sqlite" else "CURRENT_TIMESTAMP"
        started = time.monotonic()
        for start in range(1, n + 1, batch):
            ids = list(range(start, min(start + batch, n + 1)))
            in_list = ",".join(map(str, ids))
            with engine.begin() as conn:
                rows = conn.execute(
                    text(
                        f"SELECT id, status, payload FROM bench_limit_outbox WHERE id IN "
                        f"({in_list}) ORDER BY id FOR UPDATE"
                        if engine.dialect.name != "sqlite"
                        else f"SELECT id, status, payload FROM bench_limit_outbox WHERE id IN "
                        f"({in_list}) ORDER BY id"
                    )
                ).all()
                conn.execute(
                    text(
                        "INSERT INTO bench_limit_effects (outbox_id, user_id, conversation_id, "
                        "role, message, created_at) VALUES (:o, :u, :c, :r, :m, :t)"
                    ),
                    [
                        {
                            "o": r.id,
                            "u": 1,
                            "c": "conv-1",
                            "r": "user",
                            "m": r.payload,
                            "t": datetime.now(UTC).replace(tzinfo=None),
                        }
                        for r in rows
                    ],
                )
                conn.execute(
                    text(
                        f"UPDATE bench_limit_outbox SET status='consumed', consumed_at={now} "
                        f"WHERE id IN ({in_list}) AND status IN ('pending', 'published')"
                    )
                )
            self.progress.update("limits", ids[-1], n)
        elapsed = time.monotonic() - started
        with engine.begin() as conn:
            conn.execute(text("DROP TABLE bench_limit_outbox"))
            conn.execute(text("DROP TABLE bench_limit_effects"))
        return n / elapsed

    def write_phase(self, engine: Engine, threads: int = 4) -> float:
        """Business transactions, one event each, from several threads (as a service
        handling requests would); the rows are drained by the workers afterwards."""
        total = self.cfg.write_tx
        counter = iter(range(total))
        lock = threading.Lock()
        done = [0]

        def work() -> None:
            while True:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                with Session(engine) as session, session.begin():
                    session.execute(
                        text("INSERT INTO bench_orders (user_id, note) VALUES (:u, :n)"),
                        {"u": i % 1000, "n": f"order {i}"},
                    )
                    publish(session, EVENT, chat(i), key=f"conv-{i % KEYS}")
                with lock:
                    done[0] += 1
                    if done[0] % 100 == 0:
                        self.progress.update("write", done[0], total)

        with engine.begin() as conn:
            conn.execute(
                text(
                    "CREATE TABLE bench_orders (id INTEGER PRIMARY KEY AUTO_INCREMENT, "
                    "user_id BIGINT, note VARCHAR(64))"
                    if engine.dialect.name != "sqlite"
                    else "CREATE TABLE bench_orders (id INTEGER PRIMARY KEY, user_id BIGINT, "
                    "note VARCHAR(64))"
                )
            )
        started = time.monotonic()
        pool = [threading.Thread(target=work) for _ in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        return total / (time.monotonic() - started)

    def start_workers(self, url: str, broker_url: str, engine: Engine) -> float:
        """Start the workers; seconds until the first event went through."""
        from outbox_app.devtools.ports import free_port

        app_id = f"outbox-bench-{uuid.uuid4().hex[:6]}"
        started = time.monotonic()
        for k in range(self.cfg.workers):
            env = dict(os.environ)  # OUTBOX_* tuning passes through; these are the bench's
            env.update(
                OUTBOX_DATABASE_URL=url,
                OUTBOX_BROKER_URL=broker_url,
                OUTBOX_TOPIC_RECHECK_INTERVAL=TANSU_TOPIC_RECHECK,
                OUTBOX_SERVICES=SERVICE,
                OUTBOX_APP_ID=app_id,
                OUTBOX_WEB_PORT=str(free_port()),
                OUTBOX_WEB_HOST="127.0.0.1",
                OUTBOX_SESSION_TIMEOUT="6",
                OUTBOX_HEARTBEAT_INTERVAL="1",
                OUTBOX_DATADIR=str(self.tmp / f"worker-{k}"),
                OUTBOX_LOG_LEVEL="warn",
            )
            log = open(self.tmp / f"worker-{k}.log", "wb")  # noqa: SIM115 - lives with the process
            self.workers.append(
                subprocess.Popen(
                    [sys.executable, "-m", "outbox_app", "worker"],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        first = self.publish_batch(engine, [chat(0)])
        self.wait(lambda: self.consumed_count(engine, first[0], first[0]) == 1, "first event")
        elapsed = time.monotonic() - started
        # the write phase's rows go through too before the drain starts
        self.wait(lambda: self.pending_or_published(engine) == 0, "write-phase rows")
        return elapsed

    def drain_phase(self, engine: Engine) -> float:
        """A backlog of n rows, held back by a future due time and then released at once,
        so the figure is the workers' throughput from first claim to last consumed."""
        n = self.cfg.n
        ids: list[int] = []
        for start in range(0, n, 2000):
            ids += self.publish_batch(
                engine, [chat(i) for i in range(start, min(start + 2000, n))], hold=True
            )
            self.progress.update("backlog", len(ids), n)
        t = outbox_table(self.registry.route(SERVICE))
        lo, hi = ids[0], ids[-1]
        with engine.begin() as conn:
            released_at = conn.execute(select(utcnow())).scalar_one()
            conn.execute(
                t.update()
                .where(t.c.id.between(lo, hi), t.c.status == "pending")
                .values(next_retry_at=released_at)
            )
        self.wait(
            lambda: self.progress_count("drain", engine, lo, hi, n) >= n, "the backlog to drain"
        )
        with engine.connect() as conn:
            last = conn.execute(
                select(func.max(t.c.consumed_at)).where(t.c.id.between(lo, hi))
            ).scalar_one()
        elapsed: float = (last - released_at).total_seconds()
        return n / max(elapsed, 1e-6)

    def live_phase(self, engine: Engine) -> list[float]:
        """A steady rate of single-event business transactions; latency per event from
        its commit to its handler's commit (consumed_at, same clock)."""
        rate, seconds = self.cfg.live_rate, self.cfg.live_seconds
        if rate <= 0 or seconds <= 0:
            return []
        committed: dict[int, float] = {}
        lock = threading.Lock()
        producers = 2
        stop_at = time.monotonic() + seconds

        def produce(offset: int) -> None:
            per = rate / producers
            begun, sent = time.monotonic(), 0
            while (now := time.monotonic()) < stop_at:
                wait = begun + sent / per - now
                if wait > 0:
                    time.sleep(wait)  # pacing: sleep until this thread's next event is due
                    continue
                with Session(engine) as session, session.begin():
                    row_id = publish(session, EVENT, chat(offset + sent), key=f"k{sent % KEYS}")
                with lock:
                    committed[row_id] = time.time()
                sent += 1

        threads = [threading.Thread(target=produce, args=(i * 10**7,)) for i in range(producers)]
        for th in threads:
            th.start()
        while any(th.is_alive() for th in threads):
            self.progress.update("live", seconds - max(0.0, stop_at - time.monotonic()), seconds)
            time.sleep(0.2)
        for th in threads:
            th.join()
        ids = sorted(committed)
        expected = len(ids)
        self.wait(lambda: self.consumed_count(engine, ids[0], ids[-1]) >= expected, "live events")
        t = outbox_table(self.registry.route(SERVICE))
        with engine.connect() as conn:
            rows = conn.execute(
                select(t.c.id, t.c.published_at, t.c.consumed_at).where(
                    t.c.id.between(ids[0], ids[-1])
                )
            ).all()
        out, relay_ms = [], []
        for row_id, published_at, consumed_at in rows:
            if row_id in committed and consumed_at is not None:
                commit = datetime.fromtimestamp(committed[row_id], UTC).replace(tzinfo=None)
                out.append((consumed_at - commit).total_seconds() * 1000.0)
                if published_at is not None:  # None when the consumer beat the relay's mark
                    relay_ms.append((published_at - commit).total_seconds() * 1000.0)
        self.cfg.live_rate = expected / seconds
        if relay_ms:
            self.live_relay_p50_ms = statistics.median(relay_ms)
        return out

    def verify(self, engine: Engine) -> tuple[int, int]:
        """lost: committed events with neither a business effect nor a dead row;
        doubled: business effects applied more than once."""
        t = outbox_table(self.registry.route(SERVICE)).name
        with engine.connect() as conn:
            lost = conn.execute(
                text(
                    f"SELECT COUNT(*) FROM {t} o LEFT JOIN chat_history c ON c.outbox_id = o.id "
                    "WHERE c.id IS NULL AND o.status <> 'dead'"
                )
            ).scalar_one()
            doubled = conn.execute(
                text(
                    "SELECT COUNT(*) FROM (SELECT outbox_id FROM chat_history GROUP BY outbox_id "
                    "HAVING COUNT(*) > 1) d"
                )
            ).scalar_one()
        return int(lost), int(doubled)

    # -- helpers -------------------------------------------------------------------------
    def publish_batch(
        self, engine: Engine, payloads: list[dict[str, Any]], hold: bool = False
    ) -> list[int]:
        with Session(engine) as session, session.begin():
            ids = [
                publish(session, EVENT, p, key=p["conversation_id"], registry=self.registry)
                for p in payloads
            ]
            if hold:  # not due for an hour: released all at once by the drain phase
                t = outbox_table(self.registry.route(SERVICE))
                session.execute(
                    t.update()
                    .where(t.c.id.between(ids[0], ids[-1]))
                    .values(next_retry_at=datetime(2999, 1, 1))
                )
        return ids

    def consumed_count(self, engine: Engine, lo: int, hi: int) -> int:
        t = outbox_table(self.registry.route(SERVICE)).name
        with engine.connect() as conn:
            return int(
                conn.execute(
                    text(
                        f"SELECT COUNT(*) FROM {t} WHERE id BETWEEN :lo AND :hi "
                        "AND status IN ('consumed', 'dead')"
                    ),
                    {"lo": lo, "hi": hi},
                ).scalar_one()
            )

    def progress_count(self, phase: str, engine: Engine, lo: int, hi: int, total: int) -> int:
        done = self.consumed_count(engine, lo, hi)
        self.progress.update(phase, done, total)
        return done

    def pending_or_published(self, engine: Engine) -> int:
        t = outbox_table(self.registry.route(SERVICE)).name
        with engine.connect() as conn:
            return int(
                conn.execute(
                    text(f"SELECT COUNT(*) FROM {t} WHERE status IN ('pending', 'published')")
                ).scalar_one()
            )

    def wait(self, condition: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + self.cfg.timeout
        while time.monotonic() < deadline:
            if condition():
                return
            for k, proc in enumerate(self.workers):
                if proc.poll() is not None:
                    raise RuntimeError(f"worker {k} exited; log: {self.tmp / f'worker-{k}.log'}")
            time.sleep(0.05)
        raise TimeoutError(f"bench: timed out waiting for {what}; worker logs in {self.tmp}")

    def stop_workers(self) -> None:
        for proc in self.workers:
            with suppress(ProcessLookupError):
                proc.terminate()
        for proc in self.workers:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


def run_bench(config: BenchConfig) -> BenchResult:
    result = Bench(config).run()
    if config.json_path:
        Path(config.json_path).write_text(json.dumps(asdict(result), indent=2) + "\n")
    print(result.line(), flush=True)
    return result
