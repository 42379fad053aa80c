"""The phases that measure the outbox itself: business transactions through ``publish()``
(write), a released backlog relayed and consumed (drain), a steady rate (live, latency
from the business commit to the handler's commit), and the check that nothing was lost or
applied twice."""

from __future__ import annotations

import itertools
import math
import statistics
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, Table, func, select, text
from sqlalchemy.orm import Session

from outbox_app.clock import utcnow
from outbox_app.devtools.bench.config import EVENT, KEYS, SERVICE, Progress, chat
from outbox_app.devtools.bench.legs import LegProbe, Legs
from outbox_app.devtools.bench.load import LoadJob
from outbox_app.devtools.bench.measure import CpuMeter, DrainCost
from outbox_app.devtools.bench.workers import Workers
from outbox_app.publish import publish
from outbox_app.records import LIVE
from outbox_app.registry import Registry
from outbox_app.schema import outbox_table


@dataclass
class Live:
    latencies_ms: list[float] = field(default_factory=list)
    relay_p50_ms: float = 0.0  # business commit to acked and marked published
    rate: float = 0.0  # events/s actually committed
    load_cpu_share: float = 0.0  # the load generator's CPU, of one core
    legs: Legs = field(default_factory=Legs)
    cpu_us_per_event: float = 0.0  # the workers' CPU while the load ran, per event
    idle_share: float | None = None  # of the whole machine's CPU while the load ran


class Outbox:
    """The bench's view of the outbox table of one service: the chat history events of
    ``agent`` (unordered), or those of the ordered service ``bench_ordered``."""

    def __init__(
        self,
        engine: Engine,
        registry: Registry,
        progress: Progress,
        service: str = SERVICE,
        event_type: str = EVENT,
        keys: int = KEYS,
        effects: str = "chat_history",
        prefix: str = "",
    ) -> None:
        self.engine = engine
        self.registry = registry
        self.progress = progress
        self.service, self.event_type, self.keys, self.effects = service, event_type, keys, effects
        self.table = outbox_table(registry.route(service))
        self.prefix = prefix
        self.topic = prefix + registry.route(service).topic

    def with_keys(self, keys: int) -> Outbox:
        """The same service, its events spread over ``keys`` keys."""
        return Outbox(
            self.engine,
            self.registry,
            self.progress,
            self.service,
            self.event_type,
            keys,
            self.effects,
            self.prefix,
        )

    def payload(self, i: int) -> dict[str, Any]:
        p = chat(i)
        p["conversation_id"] = f"conv-{i % self.keys}"
        return p

    def publish_batch(self, payloads: list[dict[str, Any]], hold: bool = False) -> list[int]:
        t = self.table
        with Session(self.engine) as session, session.begin():
            ids = [
                publish(
                    session, self.event_type, p, key=p["conversation_id"], registry=self.registry
                )
                for p in payloads
            ]
            if hold:  # not due for now: released all at once by the drain phase
                session.execute(
                    t.update()
                    .where(t.c.id.between(ids[0], ids[-1]))
                    .values(next_retry_at=datetime(2999, 1, 1))
                )
        return ids

    def finished(self, lo: int, hi: int) -> Finished:
        return Finished(self.engine, self.table, lo, hi)

    def live_rows(self) -> int:
        t = self.table
        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    select(func.count()).where(t.c.status.in_(("pending", "published")))
                ).scalar_one()
            )

    # -- phases --------------------------------------------------------------------------
    def write(self, total: int, threads: int = 4) -> float:
        """Business transactions, one event each, from several threads (as a service
        handling requests would); the rows are drained by the workers afterwards."""
        counter = iter(range(total))
        lock = threading.Lock()
        done = [0]
        engine = self.engine

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

        auto = "" if engine.dialect.name == "sqlite" else " AUTO_INCREMENT"
        with engine.begin() as conn:
            conn.execute(
                text(
                    f"CREATE TABLE bench_orders (id INTEGER PRIMARY KEY{auto}, "
                    "user_id BIGINT, note VARCHAR(64))"
                )
            )
        started = time.monotonic()
        pool = [threading.Thread(target=work) for _ in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        return total / (time.monotonic() - started)

    def first_event(self, workers: Workers) -> None:
        (first,) = self.publish_batch([self.payload(0)])
        workers.wait(self.finished(first, first).all, "the first event")
        # the write phase's rows go through too before the drain starts
        workers.wait(lambda: self.live_rows() == 0, "the write phase's rows")

    def drain(self, n: int, workers: Workers, cost: DrainCost | None = None) -> float:
        """A backlog of n rows, held back by a future due time and then released at once,
        so the figure is the workers' throughput from first claim to last consumed."""
        ids: list[int] = []
        for start in range(0, n, 2000):
            ids += self.publish_batch(
                [self.payload(i) for i in range(start, min(start + 2000, n))], True
            )
            self.progress.update("backlog", len(ids), n)
        t = self.table
        lo, hi = ids[0], ids[-1]
        with self.engine.begin() as conn:
            released_at = conn.execute(select(utcnow())).scalar_one()
            conn.execute(
                t.update()
                .where(t.c.id.between(lo, hi), t.c.status == "pending")
                .values(next_retry_at=released_at)
            )
        if cost is not None:
            cost.start()

        finished = self.finished(lo, hi)
        polls = itertools.count()

        def drained() -> bool:
            if next(polls) % 10 == 0:  # the progress line, every 5 s
                self.progress.update("drain", finished.count(), n)
            return finished.all()

        # The drain's figure comes from the rows' own timestamps: a slow poll costs the
        # bench only the wait, and the database under measurement next to nothing.
        workers.wait(drained, "the backlog to drain", interval=0.5)
        if cost is not None:
            cost.stop(n)
        with self.engine.connect() as conn:
            last = conn.execute(
                select(func.max(t.c.consumed_at)).where(t.c.id.between(lo, hi))
            ).scalar_one()
        elapsed: float = (last - released_at).total_seconds()
        return n / max(elapsed, 1e-6)

    def live(
        self, rate: float, seconds: float, workers: Workers, bootstrap: str | None = None
    ) -> Live:
        """A steady rate of single-event business transactions from a load generator
        process of its own; latency per event from its commit to its handler's commit
        (consumed_at, same clock)."""
        out = Live()
        if rate <= 0 or seconds <= 0:
            return out
        url = self.engine.url.render_as_string(hide_password=False)
        path = workers.tmp / f"load-{uuid.uuid4().hex[:6]}.tsv"
        # A thread per 50 events/s: each waits for its own commits (a business service
        # handles its requests concurrently too).
        threads = max(2, min(64, math.ceil(rate / 50)))
        job = LoadJob(url, self.event_type, self.keys, rate, seconds, str(path), threads)
        probe = LegProbe(bootstrap, self.topic) if bootstrap else None
        if probe is not None:
            probe.__enter__()
        meter = CpuMeter(workers.pids).start()
        proc = subprocess.Popen(job.command(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        started = time.monotonic()
        while proc.poll() is None:
            self.progress.update("live", min(seconds, time.monotonic() - started), seconds)
            try:
                proc.wait(0.2)
            except subprocess.TimeoutExpired:
                if time.monotonic() - started > seconds + workers.timeout:
                    proc.kill()
                    raise TimeoutError("bench: the load generator did not finish") from None
        stdout, stderr = (s.decode(errors="replace") for s in proc.communicate())
        worker_cpu, out.idle_share = meter.used()[0], meter.idle_share()
        if proc.returncode != 0:
            raise RuntimeError(f"bench: the load generator failed: {stderr[-2000:]}")
        figures = dict(kv.split("=") for kv in stdout.split()[1:] if "=" in kv)
        out.load_cpu_share = float(figures["cpu_s"]) / max(float(figures["wall_s"]), 1e-6)
        committed = {
            int(i): float(t) for i, t in (ln.split("\t") for ln in path.read_text().splitlines())
        }
        engine = self.engine
        ids = sorted(committed)
        finished = self.finished(ids[0], ids[-1])
        workers.wait(finished.all, "the live events")
        t = self.table
        with engine.connect() as conn:
            rows = conn.execute(
                select(t.c.id, t.c.published_at, t.c.consumed_at).where(
                    t.c.id.between(ids[0], ids[-1])
                )
            ).all()
        relay_ms = []
        if probe is not None:
            probe.__exit__()
            out.legs = legs(committed, probe.seen, rows)
        for row_id, published_at, consumed_at in rows:
            if row_id in committed and consumed_at is not None:
                commit = datetime.fromtimestamp(committed[row_id], UTC).replace(tzinfo=None)
                out.latencies_ms.append((consumed_at - commit).total_seconds() * 1000.0)
                if published_at is not None:  # None when the consumer beat the relay's mark
                    relay_ms.append((published_at - commit).total_seconds() * 1000.0)
        out.rate = len(ids) / seconds
        out.cpu_us_per_event = worker_cpu * 1e6 / len(ids)
        if relay_ms:
            out.relay_p50_ms = statistics.median(relay_ms)
        return out

    def verify(self) -> tuple[int, int]:
        """lost: committed events with neither a business effect nor a dead row;
        doubled: business effects applied more than once."""
        t, e = self.table.name, self.effects
        with self.engine.connect() as conn:
            lost = conn.execute(
                text(
                    f"SELECT COUNT(*) FROM {t} o LEFT JOIN {e} c ON c.outbox_id = o.id "
                    "WHERE c.id IS NULL AND o.status <> 'dead'"
                )
            ).scalar_one()
            doubled = conn.execute(
                text(
                    f"SELECT COUNT(*) FROM (SELECT outbox_id FROM {e} GROUP BY outbox_id "
                    "HAVING COUNT(*) > 1) d"
                )
            ).scalar_one()
        return int(lost), int(doubled)


class Finished:
    """Whether (and how many of) the rows of ids ``lo..hi`` are done, to poll while workers
    run: the range's rows, counted once, less those still on their way, read on the claim
    index alone (``all`` reads one entry of it). Counting the done rows read every row of
    the range at each poll: while workers drained, that took a large share of the
    database's CPU from the system under measurement."""

    def __init__(self, engine: Engine, t: Table, lo: int, hi: int) -> None:
        self.engine = engine
        with engine.connect() as conn:
            self.rows = int(
                conn.execute(select(func.count()).where(t.c.id.between(lo, hi))).scalar_one()
            )
        hint = f"FORCE INDEX (ix_{t.name}_due)"  # a primary key range reads every row
        self._left = (
            select(t.c.id)
            .with_hint(t, hint, "mysql")
            .with_hint(t, hint, "mariadb")
            .where(t.c.status.in_(LIVE), t.c.id.between(lo, hi))
        )

    def count(self) -> int:
        with self.engine.connect() as conn:
            left = conn.execute(select(func.count()).select_from(self._left.subquery()))
            return self.rows - int(left.scalar_one())

    def all(self) -> bool:
        with self.engine.connect() as conn:
            return conn.execute(self._left.limit(1)).first() is None


def legs(committed: dict[int, float], seen: dict[int, tuple[float, float]], rows: Any) -> Legs:
    out = Legs()
    for row_id, _, consumed_at in rows:
        commit, probe = committed.get(row_id), seen.get(row_id)
        if commit is None or probe is None or consumed_at is None:
            continue
        sent, received = probe
        done = consumed_at.replace(tzinfo=UTC).timestamp()
        out.relay_ms.append((sent - commit) * 1000.0)
        out.broker_ms.append((received - sent) * 1000.0)
        out.consume_ms.append((done - sent) * 1000.0)
    return out
