"""The soak's load: business transactions through ``publish()`` at a steady rate, and
the ledger of what they committed, rolled back, or left in doubt."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, insert
from sqlalchemy.orm import Session

from outbox_app.clock import utcnow
from outbox_app.devtools.soak.config import (
    DOOMED_MAX_RETRY,
    DOOMED_STEP_SHARE,
    MEMORY_KEYS,
    STREAMS_PER_PRODUCER,
    USERS,
    SoakConfig,
)
from outbox_app.publish import publish
from outbox_app.registry import Registry


@dataclass(frozen=True)
class Sent:
    """One event the producer added to a business transaction."""

    uid: str  # the business transaction's, also its soak_orders row
    outbox_id: int
    service: str
    event_type: str
    ref: str = ""  # task id for task events, "user|key" for memory events, stream for steps
    value: str = ""  # the memory value written; a step's seq
    doomed: bool = False  # meant to fail until dead


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
        with_soak = "handler" in cfg.kinds
        self.mix: list[tuple[str, float]] = [
            ("chat_history.persist", 0.40 if with_soak else 0.50),
            ("memory.upsert", 0.25),
            ("task.created", 0.15),
            ("task.completed", 0.10),
        ]
        if with_soak:
            self.mix += [("soak.flaky", 0.08), ("soak.doomed", 0.02)]
        self.mix.append(("soak.step", 0.12))
        # Each producer thread owns its streams: a stream's transactions commit one after
        # another, which is what per-key order is promised for.
        self._steps: dict[int, dict[str, int]] = {}

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

    def _event(
        self, rng: random.Random, uid: str, i: int
    ) -> tuple[str, Any, str, str, str, int, bool]:
        """(event type, payload, key, ref, value, max_retry, doomed)"""
        kind, payload, key, ref, value, retries = self._plain_event(rng, uid, i)
        if kind != "soak.step":
            return kind, payload, key, ref, value, retries, kind == "soak.doomed"
        k = int(uid[1 : uid.index("-")])  # the producer thread: p<k>-<n>
        streams = self._steps.setdefault(k, {})
        stream = f"p{k}-st{rng.randrange(STREAMS_PER_PRODUCER)}"
        seq = streams[stream] = streams.get(stream, 0) + 1
        doomed = rng.random() < DOOMED_STEP_SHARE
        step = {"stream": stream, "seq": seq, "doomed": doomed}
        return kind, step, stream, stream, str(seq), DOOMED_MAX_RETRY if doomed else 20, doomed

    def _plain_event(
        self, rng: random.Random, uid: str, i: int
    ) -> tuple[str, Any, str, str, str, int]:
        """(event type, payload, key, ref, value, max_retry)"""
        kinds, weights = zip(*self.mix, strict=True)
        kind = rng.choices(kinds, weights)[0]
        if kind == "soak.step":
            return kind, None, "", "", "", 20
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
        from outbox_app.devtools.soak.handlers import soak_orders  # registers the soak service

        events = [self._event(rng, uid, i) for i in range(n)]
        deliberate = rng.random() < self.cfg.rollback_share
        sent: list[Sent] = []
        stage = "work"
        session = Session(self.engine)
        try:
            session.begin()
            session.execute(insert(soak_orders).values(uid=uid, events=n, created_at=utcnow()))
            for event_type, payload, key, ref, value, max_retry, doomed in events:
                oid = publish(
                    session,
                    event_type,
                    payload,
                    key=key,
                    max_retry=max_retry,
                    registry=self.registry,
                )
                service = self.registry.owner(event_type)
                sent.append(Sent(uid, oid, service, event_type, ref, value, doomed))
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
