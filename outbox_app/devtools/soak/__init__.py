"""``outbox-app soak``: a fault-injection soak that proves nothing is lost or doubled.

A producer commits chat, task and memory events (and the soak's own ``soak.*``
events) through ``publish()`` in business transactions at a steady rate, some rolled
back on purpose; two or more workers relay and consume them; a fault schedule kills
and freezes workers, restarts the broker (in memory: everything on it is lost) and
the database, kills database connections, makes a handler fail at random and puts
poison on the topics. Then the soak waits until nothing is pending or published and
checks every committed event against its business effect. One result line:

    SOAK events=N rolled_back=N consumed=N dead=N lost=N doubled=N faults=kind:N,... seconds=S

It exits non-zero when anything was lost or doubled, or another invariant broke.

``outbox_app.devtools.soak.handlers`` (the ``soak`` service) is imported only when a soak runs:
importing this module registers nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, insert, text
from sqlalchemy.orm import Session

from outbox_app.clock import utcnow
from outbox_app.database import make_engine
from outbox_app.devtools.ports import free_port
from outbox_app.devtools.soak.processes import (
    BrokerProc,
    DatabaseServer,
    PrivateMariaDB,
    SharedMariaDB,
    WorkerProc,
)
from outbox_app.envelope import encode
from outbox_app.publish import publish
from outbox_app.registry import Registry, default_registry
from outbox_app.schema import create_schema, outbox_table
from outbox_app.store import OutboxStore

FAULT_KINDS = ("kill", "stop", "broker", "dbconn", "dbrestart", "handler", "poison")
SERVICES = ("agent", "memory", "soak", "task")
HANDLER_MODULES = "handlers,outbox_app.devtools.soak.handlers"
SESSION_TIMEOUT_S = 6.0
DOOMED_MAX_RETRY = 3
USERS = 200
MEMORY_KEYS = 10


@dataclass
class SoakConfig:
    seconds: float = 60.0
    rate: float = 300.0
    workers: int = 2
    faults: tuple[str, ...] = FAULT_KINDS
    fault_interval: float = 5.0
    warmup: float = 8.0  # no faults before the workers have joined their groups
    rollback_share: float = 0.05
    handler_failure_rate: float = 0.3
    db_restarts: int | None = None  # at most this many; default: unlimited on a private server
    mysql_url: str | None = None  # default: a private mariadbd the soak may restart at will
    drain_timeout: float = 180.0
    drain_target: float = 30.0
    producers: int = 3
    seed: int | None = None
    json_path: str | None = None
    keep: bool = False
    quiet: bool = False


@dataclass
class SoakResult:
    events: int = 0
    rolled_back: int = 0
    consumed: int = 0
    dead: int = 0
    lost: int = 0
    doubled: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    drain_s: float | None = None
    transactions: int = 0
    failed_tx: int = 0
    ambiguous_tx: int = 0
    expected_dead: int = 0
    unexpected_dead: int = 0
    worker_exits: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    workdir: str = ""

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.doubled == 0 and not self.violations

    def line(self) -> str:
        faults = ",".join(f"{k}:{n}" for k, n in self.faults.items()) or "none"
        return (
            f"SOAK events={self.events} rolled_back={self.rolled_back} "
            f"consumed={self.consumed} dead={self.dead} lost={self.lost} "
            f"doubled={self.doubled} faults={faults} seconds={self.seconds:.0f}"
        )


# -- the producer's own record -------------------------------------------------------------


@dataclass(frozen=True)
class Sent:
    """One event the producer added to a business transaction."""

    uid: str  # the business transaction's, also its soak_orders row
    outbox_id: int
    service: str
    event_type: str
    ref: str = ""  # task id for task events, "user|key" for memory events
    value: str = ""  # the memory value written


@dataclass
class Ledger:
    lock: threading.Lock = field(default_factory=threading.Lock)
    committed: list[Sent] = field(default_factory=list)
    rolled_back: list[tuple[str, list[Sent]]] = field(default_factory=list)  # on purpose
    failed: list[tuple[str, list[Sent]]] = field(default_factory=list)  # broke before commit
    ambiguous: list[tuple[str, list[Sent]]] = field(default_factory=list)  # commit raised
    transactions: int = 0
    errors: Counter[str] = field(default_factory=Counter)


class Producer:
    """Business transactions at a steady event rate from a few threads, as a service
    handling requests would: a ``soak_orders`` row plus one to three events each."""

    def __init__(self, engine: Engine, cfg: SoakConfig, registry: Registry, seed: int) -> None:
        self.engine = engine
        self.cfg = cfg
        self.registry = registry
        self.seed = seed
        self.ledger = Ledger()
        self.stop = threading.Event()
        self._open_tasks: list[tuple[str, int]] = []
        self._tasks_lock = threading.Lock()
        with_soak = "handler" in cfg.faults
        self.mix: list[tuple[str, float]] = [
            ("chat_history.persist", 0.40 if with_soak else 0.50),
            ("memory.upsert", 0.25),
            ("task.created", 0.15),
            ("task.completed", 0.10),
        ]
        if with_soak:
            self.mix += [("soak.flaky", 0.08), ("soak.doomed", 0.02)]

    def run(self) -> None:
        threads = [
            threading.Thread(target=self._loop, args=(k,), name=f"soak-producer-{k}", daemon=True)
            for k in range(self.cfg.producers)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def _loop(self, k: int) -> None:
        rng = random.Random(self.seed * 100 + k)
        per_s = self.cfg.rate / self.cfg.producers
        begun, done, seq = time.monotonic(), 0, 0
        while not self.stop.is_set():
            due = int((time.monotonic() - begun) * per_s) - done
            if due <= 0:
                time.sleep(0.002)
                continue
            if due > 2 * per_s:
                # Far behind (the database was down): offer the rate again rather than a
                # flood, so the soak's load stays what it says.
                begun, done = time.monotonic(), 0
                continue
            n = 1 if rng.random() < 0.7 else (2 if rng.random() < 0.67 else 3)
            seq += 1
            done += self._transaction(rng, f"p{k}-{seq}", n)

    def _event(self, rng: random.Random, uid: str, i: int) -> tuple[str, Any, str, str, str, int]:
        """(event type, payload, key, ref, value, max_retry)"""
        kinds, weights = zip(*self.mix, strict=True)
        kind = rng.choices(kinds, weights)[0]
        user = rng.randrange(USERS)
        if kind == "task.completed":
            with self._tasks_lock:
                task = (
                    self._open_tasks.pop(rng.randrange(len(self._open_tasks)))
                    if self._open_tasks
                    else None
                )
            if task is not None:
                task_id, owner = task
                payload = {"task_id": task_id, "user_id": owner, "notify": False}
                return kind, payload, str(owner), task_id, str(owner), 20
            kind = "chat_history.persist"
        if kind == "chat_history.persist":
            conv = f"c-{user % 50}"
            payload = {
                "user_id": user,
                "conversation_id": conv,
                "role": "user",
                "message": f"soak {uid}.{i}",
            }
            return kind, payload, conv, "", "", 20
        if kind == "memory.upsert":
            mkey = f"k{rng.randrange(MEMORY_KEYS)}"
            value = f"{uid}.{i}"
            payload = {"user_id": user, "key": mkey, "value": value}
            return kind, payload, str(user), f"{user}|{mkey}", value, 20
        if kind == "task.created":
            task_id = f"t-{uid}.{i}"
            payload = {"task_id": task_id, "user_id": user, "title": f"soak task {uid}.{i}"}
            return kind, payload, str(user), task_id, str(user), 20
        retries = DOOMED_MAX_RETRY if kind == "soak.doomed" else 20
        return kind, {"uid": f"{uid}.{i}"}, f"s-{user}", "", "", retries

    def _transaction(self, rng: random.Random, uid: str, n: int) -> int:
        from outbox_app.devtools.soak.handlers import soak_orders

        events = [self._event(rng, uid, i) for i in range(n)]
        deliberate = rng.random() < self.cfg.rollback_share
        sent: list[Sent] = []
        stage = "work"
        session = Session(self.engine)
        try:
            session.begin()
            session.execute(insert(soak_orders).values(uid=uid, events=n, created_at=utcnow()))
            for event_type, payload, key, ref, value, max_retry in events:
                oid = publish(
                    session,
                    event_type,
                    payload,
                    key=key,
                    max_retry=max_retry,
                    registry=self.registry,
                )
                service = self.registry.owner(event_type)
                sent.append(Sent(uid, oid, service, event_type, ref, value))
            if deliberate:
                session.rollback()
                with self.ledger.lock:
                    self.ledger.rolled_back.append((uid, sent))
                self._reopen(sent)
                return n
            stage = "commit"
            session.commit()
            with self.ledger.lock:
                self.ledger.committed.extend(sent)
                self.ledger.transactions += 1
            with self._tasks_lock:
                self._open_tasks.extend(
                    (s.ref, int(s.value)) for s in sent if s.event_type == "task.created"
                )
            return n
        except Exception as exc:  # noqa: BLE001 - faults break transactions; record, go on
            with suppress(Exception):
                session.rollback()
            with self.ledger.lock:
                self.ledger.errors[type(exc).__name__] += 1
                if stage == "commit":
                    # The commit may have happened before the connection died: the
                    # business row (soak_orders.uid) tells, once the database is back.
                    self.ledger.ambiguous.append((uid, sent))
                else:
                    self.ledger.failed.append((uid, sent))
            if stage != "commit":
                self._reopen(sent)
            time.sleep(0.05)  # the database is likely down: do not spin
            return 0
        finally:
            with suppress(Exception):
                session.close()

    def _reopen(self, sent: list[Sent]) -> None:
        """A task whose completion did not commit may be completed later."""
        back = [s for s in sent if s.event_type == "task.completed"]
        if back:
            with self._tasks_lock:
                for s in back:
                    self._open_tasks.append((s.ref, int(s.value)))


# -- the soak ------------------------------------------------------------------------------


class Soak:
    def __init__(self, config: SoakConfig) -> None:
        self.cfg = config
        self.seed = config.seed if config.seed is not None else random.randrange(1 << 30)
        self.rng = random.Random(self.seed)
        self.registry: Registry = default_registry
        self.tmp = Path(tempfile.mkdtemp(prefix="outbox-soak-"))
        self.workers: list[WorkerProc] = []
        self.faulted: set[int] = set()  # workers the fault schedule is killing right now
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.started = time.monotonic()
        self.fault_counts: Counter[str] = Counter()
        self.fault_log: list[str] = []
        self.fault_errors: list[str] = []
        self.worker_exits: list[str] = []
        self.details: dict[str, Any] = defaultdict(int)
        self.last_fault_end: float | None = None
        self.server: DatabaseServer | None = None
        self.broker: BrokerProc | None = None
        self.engine: Engine | None = None
        self.database = ""
        self.begun = self.started
        self.wall_end = time.time()
        self.fault_start_at = self.fault_stop_at = self.started

    def say(self, message: str) -> None:
        if not self.cfg.quiet:
            elapsed = time.monotonic() - self.started
            print(f"soak +{elapsed:6.1f}s {message}", file=sys.stderr, flush=True)

    # -- set-up -------------------------------------------------------------------------
    @contextmanager
    def database_server(self) -> Iterator[str]:
        if self.cfg.mysql_url:
            server: DatabaseServer = SharedMariaDB(self.cfg.mysql_url)
            self.database = f"outbox_soak_{uuid.uuid4().hex[:8]}"
        else:
            if not PrivateMariaDB.available():
                raise RuntimeError(
                    "soak: mariadb-install-db and mariadbd are needed for a private database "
                    "server; or pass --mysql-url to use a running one"
                )
            server = PrivateMariaDB(self.tmp)
            self.database = "outbox_soak"
        self.server = server
        server.start()
        admin = create_engine(server.admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f"CREATE DATABASE `{self.database}` CHARACTER SET utf8mb4"))
        admin.dispose()
        url = server.admin_url.rstrip("/") + "/" + self.database
        try:
            yield url
        finally:
            if isinstance(server, SharedMariaDB) and not self.cfg.keep:
                with suppress(Exception):
                    admin = create_engine(server.admin_url, isolation_level="AUTOCOMMIT")
                    with admin.connect() as conn:
                        conn.execute(text(f"DROP DATABASE IF EXISTS `{self.database}`"))
                    admin.dispose()
            server.close(keep_data=self.cfg.keep)

    def worker_env(self, url: str, k: int, app_id: str) -> dict[str, str]:
        assert self.broker is not None
        env = dict(os.environ)
        env.update(
            OUTBOX_DATABASE_URL=url,
            OUTBOX_BROKER_URL=self.broker.url,
            OUTBOX_SERVICES=",".join(SERVICES),
            OUTBOX_APP_ID=app_id,
            OUTBOX_HANDLER_MODULES=HANDLER_MODULES,
            OUTBOX_WEB_PORT=str(free_port()),
            OUTBOX_WEB_HOST="127.0.0.1",
            OUTBOX_DATADIR=str(self.tmp / f"worker-{k}-data"),
            OUTBOX_LOG_LEVEL="info",
            # SIGSTOP longer than the session timeout forces a rebalance.
            OUTBOX_SESSION_TIMEOUT=f"{SESSION_TIMEOUT_S:g}",
            OUTBOX_HEARTBEAT_INTERVAL="1",
            # Messages the restarted in-memory broker lost come back this fast.
            OUTBOX_VISIBILITY_TIMEOUT="12",
            OUTBOX_MAINTENANCE_INTERVAL="2",
            OUTBOX_CLAIM_LEASE="10",
            # Retries wait at most 9 s, so the backlog drains soon after the last fault.
            OUTBOX_BACKOFF_CAP="3",
            PYTHONUNBUFFERED="1",
        )
        from outbox_app.devtools.soak.handlers import FAILURE_RATE_ENV, FAILURE_UNTIL_ENV

        # Injected handler failures stop with the fault schedule, so the drain after the
        # last fault is measured without them.
        env[FAILURE_UNTIL_ENV] = f"{self.wall_end:.3f}"
        env[FAILURE_RATE_ENV] = (
            f"{self.cfg.handler_failure_rate:g}" if "handler" in self.cfg.faults else "0"
        )
        return env

    # -- the run ------------------------------------------------------------------------
    def run(self) -> SoakResult:
        cfg = self.cfg
        self.registry.load_modules(["handlers", "outbox_app.devtools.soak.handlers"])
        # The producer's pooled connections die with every database fault, by design.
        logging.getLogger("sqlalchemy.pool").setLevel(logging.CRITICAL)
        self.say(f"seed {self.seed}; logs in {self.tmp}")
        result = SoakResult(workdir=str(self.tmp))
        self.broker = BrokerProc(log_path=self.tmp / "broker.log")
        try:
            with self.database_server() as url:
                self.broker.start()
                self.say(
                    f"database server port {getattr(self.server, 'port', '?')}, broker "
                    f"{self.broker.bootstrap}"
                )
                engine = self.engine = make_engine(url, pool_size=cfg.producers + 2)
                create_schema(engine, self.registry.routes(), self.registry.metadata)
                app_id = f"outbox-soak-{uuid.uuid4().hex[:6]}"
                self.begun = time.monotonic()
                self.wall_end = time.time() + cfg.seconds
                for k in range(cfg.workers):
                    w = WorkerProc(k, self.worker_env(url, k, app_id), self.tmp / f"worker-{k}.log")
                    w.start()
                    self.workers.append(w)
                result = self._run_phases(engine)
        finally:
            self.stop.set()
            for w in self.workers:
                w.close()
            if self.broker is not None:
                self.broker.close()
            if self.engine is not None:
                self.engine.dispose()
        if not result.ok or cfg.keep:
            self.say(f"worker logs kept in {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)
        return result

    def _run_phases(self, engine: Engine) -> SoakResult:
        cfg = self.cfg
        producer = Producer(engine, cfg, self.registry, self.seed)
        monitor = threading.Thread(target=self._monitor, name="soak-monitor", daemon=True)
        faults = threading.Thread(target=self._fault_loop, name="soak-faults", daemon=True)
        begun = self.begun
        stop_at = begun + cfg.seconds
        self.fault_start_at = begun + min(cfg.warmup, cfg.seconds / 4)
        self.fault_stop_at = stop_at
        prod = threading.Thread(target=producer.run, name="soak-producer", daemon=True)
        monitor.start()
        prod.start()
        faults.start()
        self.say(f"producing about {cfg.rate:g} events/s for {cfg.seconds:g}s")
        while time.monotonic() < stop_at:
            time.sleep(min(1.0, max(0.0, stop_at - time.monotonic())))
        producer.stop.set()
        prod.join()
        produced_at = time.monotonic()
        self.say(f"producer stopped: {len(producer.ledger.committed)} events committed")
        faults.join()
        quiet_from = max(produced_at, self.last_fault_end or 0.0)
        self.say("waiting for the backlog to drain")
        drained_at = self._wait_drained(engine, quiet_from)
        result = self.verify(engine, producer.ledger)
        result.seconds = produced_at - begun
        result.drain_s = None if drained_at is None else round(drained_at - quiet_from, 1)
        if drained_at is None:
            result.violations.append(
                f"backlog did not drain within {cfg.drain_timeout:g}s after the last fault"
            )
        elif result.drain_s is not None and result.drain_s > cfg.drain_target:
            result.violations.append(
                f"backlog drained {result.drain_s:.1f}s after the last fault "
                f"(target {cfg.drain_target:g}s)"
            )
        self.stop.set()
        monitor.join(5)
        faults_out = {k: self.fault_counts.get(k, 0) for k in cfg.faults if k != "handler"}
        if "handler" in cfg.faults:
            faults_out["handler"] = self.injected_handler_failures()
        result.faults = {k: faults_out[k] for k in FAULT_KINDS if k in faults_out}
        result.worker_exits = list(self.worker_exits)
        for exit_note in self.worker_exits:
            result.violations.append(f"a worker exited on its own: {exit_note}")
        for err in self.fault_errors:
            result.violations.append(f"a fault could not be injected: {err}")
        for kind in cfg.faults:
            if result.faults.get(kind, 0) == 0:
                result.violations.append(f"fault {kind!r} was selected but never happened")
        result.details.update(self.details)
        result.details.update(self.log_counts())
        result.details["fault_log"] = self.fault_log
        result.details["producer_errors"] = dict(producer.ledger.errors)
        result.details["seed"] = self.seed
        return result

    def _wait_drained(self, engine: Engine, since: float) -> float | None:
        deadline = since + self.cfg.drain_timeout
        last_report = 0.0
        while time.monotonic() < deadline:
            try:
                live = self.live_rows(engine)
            except Exception:  # noqa: BLE001 - the database may still be coming back
                live = -1
            if live == 0:
                return time.monotonic()
            if time.monotonic() - last_report > 5:
                last_report = time.monotonic()
                self.say(f"{live} row(s) still pending or published")
            time.sleep(0.2)
        return None

    def live_rows(self, engine: Engine) -> int:
        total = 0
        with engine.connect() as conn:
            for service in SERVICES:
                t = outbox_table(self.registry.route(service)).name
                total += int(
                    conn.execute(
                        text(f"SELECT COUNT(*) FROM {t} WHERE status IN ('pending', 'published')")
                    ).scalar_one()
                )
        return total

    # -- workers ----------------------------------------------------------------------------
    def _monitor(self) -> None:
        """A worker must never exit because of a fault: note it, and start it again so the
        soak goes on."""
        while not self.stop.wait(0.5):
            for w in self.workers:
                with self.lock:
                    if w.index in self.faulted or w.alive() or self.stop.is_set():
                        continue
                    code = w.proc.returncode if w.proc is not None else None
                    note = f"worker {w.index} exited with code {code}"
                    self.worker_exits.append(note)
                    self.say(f"!! {note}; restarting it (log {w.log_path})")
                    w.start()

    # -- faults -----------------------------------------------------------------------------
    def _fault_loop(self) -> None:
        kinds = [k for k in self.cfg.faults if k != "handler"]  # handler failures are continuous
        rotation: list[str] = []
        next_at = self.fault_start_at
        while not self.stop.is_set():
            wait = next_at - time.monotonic()
            if wait > 0 and self.stop.wait(wait):
                return
            if time.monotonic() >= self.fault_stop_at or not kinds:
                return
            if not rotation:
                rotation = list(kinds)
                self.rng.shuffle(rotation)
            kind = rotation.pop(0)
            limit = self.db_restart_limit()
            if kind == "dbrestart" and limit is not None and self.fault_counts[kind] >= limit:
                continue
            started = time.monotonic()
            try:
                note = self.inject(kind)
            except Exception as exc:  # noqa: BLE001 - report it, keep the schedule going
                note = f"FAILED: {type(exc).__name__}: {exc}"
                self.fault_errors.append(f"{kind}: {type(exc).__name__}: {exc}")
            self.fault_counts[kind] += 1
            self.last_fault_end = time.monotonic()
            entry = f"{kind} ({self.last_fault_end - started:.1f}s) {note}"
            self.fault_log.append(f"+{started - self.started:.1f}s {entry}")
            self.say(f"fault {entry}")
            next_at = time.monotonic() + self.cfg.fault_interval * self.rng.uniform(0.5, 1.5)

    def db_restart_limit(self) -> int | None:
        if self.cfg.db_restarts is not None:
            return self.cfg.db_restarts
        return 2 if self.cfg.mysql_url else None

    def inject(self, kind: str) -> str:
        if kind == "kill":
            return self.fault_kill()
        if kind == "stop":
            return self.fault_stop()
        if kind == "broker":
            return self.fault_broker()
        if kind == "dbconn":
            assert self.server is not None
            killed = self.server.kill_connections(self.database, 0.5, self.rng.sample)
            self.details["dbconn_killed"] += killed
            return f"killed {killed} connection(s)"
        if kind == "dbrestart":
            assert self.server is not None
            crash = self.fault_counts["dbrestart"] % 2 == 1
            self.server.restart(crash=crash and isinstance(self.server, PrivateMariaDB))
            return "crashed (SIGKILL) and restarted" if crash else "shut down and restarted"
        if kind == "poison":
            sent = asyncio.run(asyncio.wait_for(self.send_poison(), 30))
            self.details["poison_records"] += sent
            return f"{sent} record(s) on {len(SERVICES)} topics"
        raise ValueError(f"unknown fault {kind!r}")

    def _pick_worker(self) -> WorkerProc:
        alive = [w for w in self.workers if w.alive()] or self.workers
        return self.rng.choice(alive)

    def fault_kill(self) -> str:
        w = self._pick_worker()
        with self.lock:
            self.faulted.add(w.index)
        try:
            w.kill()
            pause = self.rng.uniform(0.5, 2.0)
            time.sleep(pause)
            w.start()
        finally:
            with self.lock:
                self.faulted.discard(w.index)
        return f"worker {w.index} SIGKILLed, restarted after {pause:.1f}s"

    def fault_stop(self) -> str:
        w = self._pick_worker()
        frozen = SESSION_TIMEOUT_S + 3.0
        w.signal(signal.SIGSTOP)
        try:
            time.sleep(frozen)
        finally:
            w.signal(signal.SIGCONT)
        return f"worker {w.index} SIGSTOPped for {frozen:.0f}s"

    def fault_broker(self) -> str:
        assert self.broker is not None
        self.broker.kill()
        down = self.rng.uniform(1.0, 3.0)
        time.sleep(down)
        self.broker.start()
        return f"broker killed, restarted empty on the same port after {down:.1f}s"

    async def send_poison(self) -> int:
        """Records no worker should act on, and replays of real envelopes (duplicate
        deliveries), on every topic."""
        from aiokafka import AIOKafkaProducer

        assert self.broker is not None and self.engine is not None
        producer = AIOKafkaProducer(
            bootstrap_servers=self.broker.bootstrap, request_timeout_ms=10000
        )
        await producer.start()
        sent = 0
        try:
            for service in SERVICES:
                route = self.registry.route(service)
                n = self.rng.randrange(1, 10**6)
                records: list[tuple[bytes | None, bytes, list[tuple[str, bytes]]]] = [
                    (b"poison", b"\x00\xffnot json at all", []),
                    (b"poison", b"[1, 2, 3]", []),
                    (b"poison", b'{"v": 99, "hello": "world"}', []),
                    (
                        b"poison",
                        json.dumps(
                            {"v": 1, "outbox_id": n, "event_type": "x", "service": "nope"}
                        ).encode(),
                        [],
                    ),
                    (
                        b"poison",
                        json.dumps(
                            {
                                "v": 1,
                                "outbox_id": 10**12 + n,
                                "event_type": "chat_history.persist",
                                "service": service,
                            }
                        ).encode(),
                        [],
                    ),
                ]
                records += self._replays(route.service, 2)
                for key, value, headers in records:
                    sent += await self._send_retrying(producer, route.topic, key, value, headers)
        finally:
            await producer.stop()
        return sent

    @staticmethod
    async def _send_retrying(
        producer: Any, topic: str, key: bytes | None, value: bytes, headers: Any
    ) -> int:
        # Tansu answers UnknownError for a while after a restart: this is the soak's
        # tool, not the system under test, so it insists.
        for attempt in range(10):
            try:
                await producer.send_and_wait(topic, value, key=key, headers=headers)
                return 1
            except Exception:
                if attempt == 9:
                    raise
                await asyncio.sleep(1.0)
        return 0

    def _replays(
        self, service: str, n: int
    ) -> list[tuple[bytes | None, bytes, list[tuple[str, bytes]]]]:
        assert self.engine is not None
        store = OutboxStore(self.engine, self.registry.route(service))
        t = store.table
        with self.engine.connect() as conn:
            ids = [
                r
                for (r,) in conn.execute(
                    text(f"SELECT id FROM {t.name} ORDER BY id DESC LIMIT 200")
                ).all()
            ]
        out = []
        for row_id in self.rng.sample(ids, min(n, len(ids))):
            row = store.get(row_id)
            if row is not None:
                out.append(encode(row))
        return out

    def log_counts(self) -> dict[str, int]:
        """How often the recovery paths ran, from the worker logs."""
        text = "\n".join(w.log_text() for w in self.workers)
        patterns = {
            "stale_recovered": r"maintenance \w+: (\d+) published row\(s\) not consumed",
            "publish_failed": r"relay \w+: (\d+) of \d+ row\(s\) not published",
            "events_in_retried_batches": r"consumer \w+: batch of (\d+) rolled back",
        }
        return {
            name: sum(int(n) for n in re.findall(pattern, text))
            for name, pattern in patterns.items()
        }

    def injected_handler_failures(self) -> int:
        from outbox_app.devtools.soak.handlers import INJECTED

        pattern = re.compile(re.escape(INJECTED) + r" outbox_id=(\d+) attempt=(\d+)")
        seen: set[tuple[str, str]] = set()
        for w in self.workers:
            seen.update(pattern.findall(w.log_text()))
        return len(seen)

    # -- invariants -------------------------------------------------------------------------
    def verify(self, engine: Engine, ledger: Ledger) -> SoakResult:
        """Every committed event against its business effect; rolled-back transactions
        against every table."""
        res = SoakResult(workdir=str(self.tmp))
        with engine.connect() as conn:

            def rows(sql: str) -> list[Any]:
                return list(conn.execute(text(sql)).all())

            orders = {uid for (uid,) in rows("SELECT uid FROM soak_orders")}
            committed = list(ledger.committed)
            not_committed: list[tuple[str, list[Sent]]] = ledger.rolled_back + ledger.failed
            for uid, sent in ledger.ambiguous:
                # The commit raised: the business row says whether it happened.
                if uid in orders:
                    committed.extend(sent)
                else:
                    not_committed.append((uid, sent))
            status: dict[tuple[str, int], tuple[str, str | None]] = {}
            for service in SERVICES:
                t = outbox_table(self.registry.route(service)).name
                for row_id, st, err in rows(f"SELECT id, status, last_error FROM {t}"):
                    status[(service, int(row_id))] = (st, err)
            chat = {
                int(o): int(n)
                for o, n in rows("SELECT outbox_id, COUNT(*) FROM chat_history GROUP BY outbox_id")
            }
            effects = {
                int(o): int(n)
                for o, n in rows("SELECT outbox_id, COUNT(*) FROM soak_effects GROUP BY outbox_id")
            }
            tasks = {
                tid: (int(c), st, None if d is None else int(d))
                for tid, c, st, d in rows(
                    "SELECT task_id, created_by_outbox_id, status, completed_by_outbox_id "
                    "FROM tasks"
                )
            }
            memories = {
                f"{u}|{k}": (int(v), val)
                for u, k, v, val in rows("SELECT user_id, mkey, version, value FROM memories")
            }
        res.events = len(committed)
        res.rolled_back = sum(len(s) for _, s in ledger.rolled_back)
        res.transactions = ledger.transactions
        res.failed_tx = len(ledger.failed)
        res.ambiguous_tx = len(ledger.ambiguous)
        v = res.violations
        lost_ids: list[str] = []
        doubled_ids: list[str] = []
        memory_expected: Counter[str] = Counter()
        memory_values: defaultdict[str, set[str]] = defaultdict(set)
        unexpected_dead: list[str] = []
        live: list[str] = []
        for s in committed:
            st, err = status.get((s.service, s.outbox_id), ("missing", None))
            where = f"{s.event_type}#{s.outbox_id}"
            if st == "missing":
                v.append(f"committed outbox row {where} is not in its table")
                lost_ids.append(where)
                continue
            if st in ("pending", "published"):
                live.append(where)
            if st == "consumed":
                res.consumed += 1
            dead = st == "dead"
            if dead:
                res.dead += 1
                if s.event_type == "soak.doomed":
                    res.expected_dead += 1
                else:
                    unexpected_dead.append(f"{where}: {err}")
            et = s.event_type
            if et == "chat_history.persist":
                n = chat.get(s.outbox_id, 0)
                if n == 0 and not dead:
                    lost_ids.append(where)
                elif n > 1:
                    doubled_ids.append(where)
            elif et == "soak.flaky":
                n = effects.get(s.outbox_id, 0)
                if n == 0 and not dead:
                    lost_ids.append(where)
                elif n > 1:
                    doubled_ids.append(where)
            elif et == "soak.doomed":
                if effects.get(s.outbox_id, 0):
                    v.append(f"{where}: a failed attempt's write was committed")
                if st == "consumed":
                    v.append(f"{where}: meant to fail, but consumed")
                elif not dead:
                    lost_ids.append(where)  # neither an effect (by design) nor a dead row
            elif et == "task.created":
                task = tasks.get(s.ref)
                if (task is None or task[0] != s.outbox_id) and not dead:
                    lost_ids.append(where)
                if dead and err and f"created by outbox id {s.outbox_id})" in err:
                    doubled_ids.append(where)  # it ran again after its own effect committed
            elif et == "task.completed":
                task = tasks.get(s.ref)
                if (task is None or task[2] != s.outbox_id) and not dead:
                    lost_ids.append(where)
            elif et == "memory.upsert":
                memory_values[s.ref].add(s.value)
                if not dead:
                    memory_expected[s.ref] += 1
        # memory: the version counts the upserts applied to each (user, key); compare it
        # with the committed, not-dead upserts of that pair.
        for ref in set(memory_expected) | set(memories):
            version, value = memories.get(ref, (0, None))
            expected = memory_expected.get(ref, 0)
            if version < expected:
                lost_ids.extend([f"memory.upsert({ref})"] * (expected - version))
            elif version > expected:
                doubled_ids.extend([f"memory.upsert({ref})"] * (version - expected))
            if value is not None and value not in memory_values.get(ref, set()):
                v.append(f"memory {ref} holds {value!r}, which no committed event wrote")
        res.lost = len(lost_ids)
        res.doubled = len(doubled_ids)
        res.unexpected_dead = len(unexpected_dead)
        if live:
            v.append(f"{len(live)} committed event(s) still live: {live[:5]}")
        if unexpected_dead:
            v.append(f"{len(unexpected_dead)} event(s) dead unexpectedly: {unexpected_dead[:3]}")
        # transactions that did not commit left nothing behind
        committed_ids = {(s.service, s.outbox_id) for s in committed}
        # An id handed to an insert that rolled back may be handed out again after the
        # server crashed (InnoDB restores its counter from the last durable state): such
        # an id belongs to the committed event that got it second.
        gone_ids = {
            (s.service, s.outbox_id) for _, sent in not_committed for s in sent
        } - committed_ids
        leftovers = [f"{svc}#{i}" for svc, i in gone_ids if (svc, i) in status]
        leftovers += [f"soak_orders {uid}" for uid, _ in not_committed if uid in orders]
        chat_gone = {i for svc, i in gone_ids if svc == "agent"}
        leftovers += [f"chat_history for #{i}" for i in chat_gone if i in chat]
        task_gone = {
            s.ref for _, sent in not_committed for s in sent if s.event_type == "task.created"
        }
        leftovers += [f"task {t}" for t in task_gone if t in tasks]
        if leftovers:
            v.append(
                f"{len(leftovers)} trace(s) of transactions that never committed: {leftovers[:5]}"
            )
        strays = [
            f"{svc}#{i}"
            for (svc, i) in status
            if (svc, i) not in committed_ids and (svc, i) not in gone_ids
        ]
        if strays:
            v.append(f"{len(strays)} outbox row(s) nobody committed: {strays[:5]}")
        twice = [
            k for k, n in Counter((s.service, s.outbox_id) for s in committed).items() if n > 1
        ]
        if twice:  # a committed row vanished in a crash and its id was handed out again
            v.append(f"{len(twice)} outbox id(s) committed twice: {twice[:5]}")
        no_order = {s.uid for s in committed if s.uid not in orders}
        if no_order:
            v.append(f"{len(no_order)} committed transaction(s) lost their business row")
        res.details["lost_sample"] = lost_ids[:10]
        res.details["doubled_sample"] = doubled_ids[:10]
        return res


def _terminate(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)  # unwinds, so the soak stops what it started


def run_soak(config: SoakConfig) -> SoakResult:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)
    result = Soak(config).run()
    if config.json_path:
        Path(config.json_path).write_text(json.dumps(asdict(result), indent=2, default=str) + "\n")
    for problem in result.violations:
        print(f"soak: violation: {problem}", file=sys.stderr)
    print(
        f"soak: drain_s={result.drain_s} transactions={result.transactions} "
        f"failed_tx={result.failed_tx} ambiguous_tx={result.ambiguous_tx} "
        f"expected_dead={result.expected_dead} unexpected_dead={result.unexpected_dead} "
        f"stale_recovered={result.details.get('stale_recovered')} "
        f"publish_failed={result.details.get('publish_failed')}",
        file=sys.stderr,
    )
    print(result.line(), flush=True)
    return result


def parse_faults(raw: str) -> tuple[str, ...]:
    if raw.strip().lower() in ("all", ""):
        return FAULT_KINDS
    if raw.strip().lower() == "none":
        return ()
    wanted = tuple(dict.fromkeys(p.strip().lower() for p in raw.split(",") if p.strip()))
    unknown = [k for k in wanted if k not in FAULT_KINDS]
    if unknown:
        raise ValueError(
            f"unknown fault(s) {', '.join(unknown)}; choose from {', '.join(FAULT_KINDS)}"
        )
    return wanted
