"""The soak's fault schedule: one fault every ``--fault-interval`` seconds on average,
rotating through the chosen kinds, each injected into the rig's processes."""

from __future__ import annotations

import asyncio
import json
import random
import signal
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, text

from outbox_app.devtools.soak.config import SERVICES, SESSION_TIMEOUT_S, SoakConfig
from outbox_app.devtools.soak.processes import (
    KafkaSoakBroker,
    PrivateMariaDB,
    TansuSoakBroker,
    WorkerProc,
)
from outbox_app.devtools.soak.rig import Rig
from outbox_app.envelope import KafkaRecord, encode
from outbox_app.registry import Registry
from outbox_app.store import OutboxStore


class Faults:
    def __init__(
        self,
        rig: Rig,
        cfg: SoakConfig,
        rng: random.Random,
        engine: Engine,
        registry: Registry,
        say: Callable[[str], None],
    ) -> None:
        self.rig, self.cfg, self.rng = rig, cfg, rng
        self.engine, self.registry, self.say = engine, registry, say
        self.counts: Counter[str] = Counter()
        self.log: list[str] = []
        self.errors: list[str] = []
        self.details: defaultdict[str, int] = defaultdict(int)
        self.last_end: float | None = None
        self.began = time.monotonic()
        self.cycled = threading.Event()  # every fault kind has happened at least once

    def run(self, start_at: float, stop_at: float, stop: threading.Event) -> None:
        """Inject faults from ``start_at`` until ``stop_at`` (monotonic), or ``stop``; past
        ``stop_at`` only until every kind happened once (``cycled`` is then set), so that a
        slow machine still sees each fault kind it was asked for."""
        kinds = [k for k in self.cfg.kinds if k != "handler"]  # handler failures are continuous
        rotation: list[str] = []
        next_at = start_at
        if not kinds:
            self.cycled.set()
        while not stop.is_set():
            wait = next_at - time.monotonic()
            if wait > 0 and stop.wait(wait):
                return
            if not kinds or (time.monotonic() >= stop_at and self.cycled.is_set()):
                return
            if not rotation:
                rotation = list(kinds)
                self.rng.shuffle(rotation)
            kind = rotation.pop(0)
            limit = self.db_restart_limit()
            if kind == "dbrestart" and limit is not None and self.counts[kind] >= limit:
                continue
            started = time.monotonic()
            try:
                note = self.inject(kind)
            except Exception as exc:  # noqa: BLE001 - report it, keep the schedule going
                note = f"FAILED: {type(exc).__name__}: {exc}"
                self.errors.append(f"{kind}: {type(exc).__name__}: {exc}")
            self.counts[kind] += 1
            self.last_end = time.monotonic()
            entry = f"{kind} ({self.last_end - started:.1f}s) {note}"
            self.log.append(f"+{started - self.began:.1f}s {entry}")
            self.say(f"fault {entry}")
            if all(self.counts[k] for k in kinds if self._may(k)):
                self.cycled.set()
            next_at = time.monotonic() + self.cfg.fault_interval * self.rng.uniform(0.5, 1.5)

    def _may(self, kind: str) -> bool:
        limit = self.db_restart_limit()
        return not (kind == "dbrestart" and limit == 0)

    def db_restart_limit(self) -> int | None:
        if self.cfg.db_restarts is not None:
            return self.cfg.db_restarts
        return 2 if self.cfg.mysql_url else None

    def inject(self, kind: str) -> str:
        if kind == "kill":
            return self.kill_worker()
        if kind == "stop":
            return self.stop_worker()
        if kind == "broker":
            return self.restart_broker()
        if kind == "broker-kill":
            return self.kill_broker_node()
        if kind == "broker-bounce":
            return self.bounce_brokers()
        server = self.rig.server
        if kind == "dbconn":
            assert server is not None
            killed = server.kill_connections(self.rig.database, 0.5, self.rng.sample)
            self.details["dbconn_killed"] += killed
            return f"killed {killed} connection(s)"
        if kind == "dbrestart":
            assert server is not None
            crash = self.counts["dbrestart"] % 2 == 1
            server.restart(crash=crash and isinstance(server, PrivateMariaDB))
            return "crashed (SIGKILL) and restarted" if crash else "shut down and restarted"
        if kind == "poison":
            sent = asyncio.run(asyncio.wait_for(self.send_poison(), 30))
            self.details["poison_records"] += sent
            return f"{sent} record(s) on {len(SERVICES)} topics"
        raise ValueError(f"unknown fault {kind!r}")

    def _pick_worker(self) -> WorkerProc:
        alive = [w for w in self.rig.workers if w.alive()] or self.rig.workers
        return self.rng.choice(alive)

    def kill_worker(self) -> str:
        w = self._pick_worker()
        with self.rig.lock:
            self.rig.faulted.add(w.index)
        try:
            w.kill()
            pause = self.rng.uniform(0.5, 2.0)
            time.sleep(pause)
            w.start()
        finally:
            with self.rig.lock:
                self.rig.faulted.discard(w.index)
        return f"worker {w.index} SIGKILLed, restarted after {pause:.1f}s"

    def stop_worker(self) -> str:
        w = self._pick_worker()
        frozen = SESSION_TIMEOUT_S + 3.0
        w.signal(signal.SIGSTOP)
        try:
            time.sleep(frozen)
        finally:
            w.signal(signal.SIGCONT)
        return f"worker {w.index} SIGSTOPped for {frozen:.0f}s"

    def restart_broker(self) -> str:
        broker = self.rig.broker
        assert isinstance(broker, TansuSoakBroker)
        down = self.rng.uniform(1.0, 3.0)
        broker.restart_empty(down)
        return f"broker killed, restarted empty on the same port after {down:.1f}s"

    def kill_broker_node(self) -> str:
        broker = self.rig.broker
        assert isinstance(broker, KafkaSoakBroker)
        index = self.rng.randrange(len(broker.cluster.members))
        down = self.rng.uniform(1.0, 5.0)
        broker.kill_node(index, down)
        return f"kafka node {index + 1} SIGKILLed, restarted on its data after {down:.1f}s"

    def bounce_brokers(self) -> str:
        broker = self.rig.broker
        assert isinstance(broker, KafkaSoakBroker)
        broker.bounce()
        return f"rolling restart of {len(broker.cluster.members)} kafka node(s)"

    async def send_poison(self) -> int:
        """Records no worker should act on, and replays of real envelopes (duplicate
        deliveries), on every topic."""
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(
            bootstrap_servers=self.rig.broker.bootstrap, request_timeout_ms=10000
        )
        await producer.start()
        sent = 0
        try:
            for service in SERVICES:
                route = self.registry.route(service)
                n = self.rng.randrange(1, 10**6)
                records: list[KafkaRecord] = [
                    (b"poison", b"\x00\xffnot json at all", []),
                    (b"poison", b"[1, 2, 3]", []),
                    (b"poison", b'{"v": 99, "hello": "world"}', []),
                    (b"poison", _envelope(n, "x", "nope"), []),
                    (b"poison", _envelope(10**12 + n, "chat_history.persist", service), []),
                ]
                records += self._replays(route.service, 2)
                for key, value, headers in records:
                    sent += await _send_retrying(producer, route.topic, key, value, headers)
        finally:
            await producer.stop()
        return sent

    def _replays(self, service: str, n: int) -> list[KafkaRecord]:
        store = OutboxStore(self.engine, self.registry.route(service))
        with self.engine.connect() as conn:
            ids = [
                r
                for (r,) in conn.execute(
                    text(f"SELECT id FROM {store.table.name} ORDER BY id DESC LIMIT 200")
                ).all()
            ]
        out = []
        for row_id in self.rng.sample(ids, min(n, len(ids))):
            row = store.get(row_id)
            if row is not None:
                out.append(encode(row))
        return out


def _envelope(outbox_id: int, event_type: str, service: str) -> bytes:
    return json.dumps(
        {"v": 1, "outbox_id": outbox_id, "event_type": event_type, "service": service}
    ).encode()


async def _send_retrying(
    producer: Any, topic: str, key: bytes | None, value: bytes, headers: Any
) -> int:
    # Brokers answer errors for a while after a restart (Tansu: UnknownError; Kafka: no
    # leader yet): this is the soak's tool, not the system under test, so it insists.
    for attempt in range(10):
        try:
            await producer.send_and_wait(topic, value, key=key, headers=headers)
            return 1
        except Exception:
            if attempt == 9:
                raise
            await asyncio.sleep(1.0)
    return 0
