"""The soak's judge: every event the producer saw commit, checked against its business
effect, and every transaction that did not commit, checked for traces. Each check is a
method of ``Judge`` named for what it proves; ``verify`` runs them all."""

from __future__ import annotations

import functools
import itertools
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, text

from outbox_app.devtools.soak.config import SERVICES, SoakResult
from outbox_app.devtools.soak.producer import Ledger, Sent
from outbox_app.registry import Registry
from outbox_app.schema import outbox_table

Row = tuple[str, int]  # (service, outbox id)


@dataclass
class Snapshot:
    """What the database holds once the backlog drained."""

    orders: set[str]  # soak_orders.uid: the business row of each committed transaction
    status: dict[Row, tuple[str, str | None]]  # outbox rows: (status, last_error)
    chat: dict[int, int]  # chat_history rows per outbox id
    effects: dict[int, int]  # soak_effects rows per outbox id
    tasks: dict[str, tuple[int, str, int | None]]  # task id: (created by, status, completed by)
    memories: dict[str, tuple[int, str]]  # "user|key": (version, value)
    steps: dict[str, list[int]]  # stream: the outbox ids of its steps' effects, commit order

    @functools.cached_property
    def step_effects(self) -> dict[int, int]:
        return dict(Counter(i for ids in self.steps.values() for i in ids))

    @classmethod
    def read(cls, engine: Engine, registry: Registry) -> Snapshot:
        with engine.connect() as conn:

            def rows(sql: str) -> list[Any]:
                return list(conn.execute(text(sql)).all())

            status: dict[Row, tuple[str, str | None]] = {}
            for service in SERVICES:
                t = outbox_table(registry.route(service)).name
                for row_id, st, err in rows(f"SELECT id, status, last_error FROM {t}"):
                    status[(service, int(row_id))] = (st, err)
            return cls(
                orders={uid for (uid,) in rows("SELECT uid FROM soak_orders")},
                status=status,
                chat=_per_outbox_id(
                    rows("SELECT outbox_id, COUNT(*) FROM chat_history GROUP BY 1")
                ),
                effects=_per_outbox_id(
                    rows("SELECT outbox_id, COUNT(*) FROM soak_effects GROUP BY 1")
                ),
                tasks={
                    tid: (int(c), st, None if d is None else int(d))
                    for tid, c, st, d in rows(
                        "SELECT task_id, created_by_outbox_id, status, completed_by_outbox_id "
                        "FROM tasks"
                    )
                },
                memories={
                    f"{u}|{k}": (int(v), val)
                    for u, k, v, val in rows("SELECT user_id, mkey, version, value FROM memories")
                },
                steps=_streams(rows("SELECT stream, outbox_id FROM soak_steps ORDER BY id")),
            )


def _per_outbox_id(rows: list[Any]) -> dict[int, int]:
    return {int(o): int(n) for o, n in rows}


def _streams(rows: list[Any]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for stream, outbox_id in rows:
        out.setdefault(stream, []).append(int(outbox_id))
    return out


@dataclass
class Judge:
    snap: Snapshot
    ledger: Ledger
    result: SoakResult = field(default_factory=SoakResult)
    lost: list[str] = field(default_factory=list)
    doubled: list[str] = field(default_factory=list)
    committed: list[Sent] = field(default_factory=list)
    not_committed: list[tuple[str, list[Sent]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        ledger = self.ledger
        self.committed = list(ledger.committed)
        self.not_committed = ledger.rolled_back + ledger.failed
        for uid, sent in ledger.ambiguous:
            # The commit raised: the business row says whether it happened.
            if uid in self.snap.orders:
                self.committed.extend(sent)
            else:
                self.not_committed.append((uid, sent))
        r = self.result
        r.events = len(self.committed)
        r.rolled_back = sum(len(s) for _, s in ledger.rolled_back)
        r.transactions = ledger.transactions
        r.failed_tx = len(ledger.failed)
        r.ambiguous_tx = len(ledger.ambiguous)

    def violation(self, message: str) -> None:
        self.result.violations.append(message)

    # -- committed events ----------------------------------------------------------------
    def every_committed_event_finished(self) -> None:
        """Consumed, or dead (only ``soak.doomed`` is meant to die); none still live."""
        live: list[str] = []
        unexpected: list[str] = []
        for s in self.committed:
            st, err = self._status(s)
            where = _where(s)
            if st == "missing":
                self.violation(f"committed outbox row {where} is not in its table")
                self.lost.append(where)
            elif st in ("pending", "published"):
                live.append(where)
            elif st == "consumed":
                self.result.consumed += 1
            elif st in ("dead", "skipped"):  # skipped: dead, and let go by the operator
                self.result.dead += 1
                if s.doomed or s.event_type == "soak.doomed":
                    self.result.expected_dead += 1
                else:
                    unexpected.append(f"{where}: {err}")
        self.result.unexpected_dead = len(unexpected)
        if live:
            self.violation(f"{len(live)} committed event(s) still live: {live[:5]}")
        if unexpected:
            self.violation(f"{len(unexpected)} event(s) dead unexpectedly: {unexpected[:3]}")

    def every_effect_applied_once(self) -> None:
        """Each committed event that is not dead left its effect, once."""
        snap = self.snap
        for s in self.committed:
            st, err = self._status(s)
            if st == "missing":
                continue  # counted lost already
            dead, where, et = st in ("dead", "skipped"), _where(s), s.event_type
            if et in ("chat_history.persist", "soak.flaky"):
                n = (snap.chat if et == "chat_history.persist" else snap.effects).get(
                    s.outbox_id, 0
                )
                if n == 0 and not dead:
                    self.lost.append(where)
                elif n > 1:
                    self.doubled.append(where)
            elif et == "soak.doomed":
                if snap.effects.get(s.outbox_id, 0):
                    self.violation(f"{where}: a failed attempt's write was committed")
                if st == "consumed":
                    self.violation(f"{where}: meant to fail, but consumed")
                elif not dead:
                    self.lost.append(where)  # neither an effect (by design) nor a dead row
            elif et == "soak.step":
                n = snap.step_effects.get(s.outbox_id, 0)
                if s.doomed:
                    if n:
                        self.violation(f"{where}: a failed attempt's write was committed")
                    if not dead:
                        self.lost.append(where)
                elif n == 0 and not dead:
                    self.lost.append(where)
                elif n > 1:
                    self.doubled.append(where)
            elif et == "task.created":
                task = snap.tasks.get(s.ref)
                if (task is None or task[0] != s.outbox_id) and not dead:
                    self.lost.append(where)
                if dead and err and f"created by outbox id {s.outbox_id})" in err:
                    self.doubled.append(where)  # it ran again after its own effect committed
            elif et == "task.completed":
                task = snap.tasks.get(s.ref)
                if (task is None or task[2] != s.outbox_id) and not dead:
                    self.lost.append(where)

    def memory_versions_match_the_upserts(self) -> None:
        """The version of each (user, key) counts the upserts applied to it: compare it with
        the committed upserts of that pair that are not dead."""
        expected: Counter[str] = Counter()
        values: defaultdict[str, set[str]] = defaultdict(set)
        for s in self.committed:
            if s.event_type != "memory.upsert":
                continue
            values[s.ref].add(s.value)
            if self._status(s)[0] not in ("dead", "missing"):
                expected[s.ref] += 1
        for ref in set(expected) | set(self.snap.memories):
            version, value = self.snap.memories.get(ref, (0, ""))
            want = expected.get(ref, 0)
            if version < want:
                self.lost.extend([f"memory.upsert({ref})"] * (want - version))
            elif version > want:
                self.doubled.extend([f"memory.upsert({ref})"] * (version - want))
            if ref in self.snap.memories and value not in values.get(ref, set()):
                self.violation(f"memory {ref} holds {value!r}, which no committed event wrote")

    def each_stream_committed_in_order(self) -> None:
        """Per ordered stream, the effects commit in the order its steps committed: an
        effect whose step came before the previous effect's step is out of order.

        A stream belongs to one producer thread, which commits its steps one after
        another and numbers them as it goes, so a step's ``seq`` is its commit order. (The
        ledger's list is not: a step whose commit raised is placed once the business row
        says it committed, after steps that came later.)"""
        seq = {s.outbox_id: int(s.value) for s in self.committed if s.event_type == "soak.step"}
        for stream, ids in self.snap.steps.items():
            known = [seq[i] for i in ids if i in seq]
            if len(known) < len(ids):
                self.violation(f"stream {stream}: effects of steps nobody committed")
            inversions = sum(1 for a, b in itertools.pairwise(known) if b < a)
            self.result.out_of_order += inversions
            if inversions:
                self.result.details.setdefault("out_of_order_streams", []).append(stream)

    # -- what did not commit -----------------------------------------------------------------
    def uncommitted_transactions_left_nothing(self) -> None:
        snap = self.snap
        committed_ids = {(s.service, s.outbox_id) for s in self.committed}
        gone = self._gone_ids(committed_ids)
        leftovers = [f"{svc}#{i}" for svc, i in gone if (svc, i) in snap.status]
        leftovers += [f"soak_orders {uid}" for uid, _ in self.not_committed if uid in snap.orders]
        leftovers += [
            f"chat_history for #{i}" for svc, i in gone if svc == "agent" and i in snap.chat
        ]
        created = {
            s.ref for _, sent in self.not_committed for s in sent if s.event_type == "task.created"
        }
        leftovers += [f"task {t}" for t in created if t in snap.tasks]
        if leftovers:
            self.violation(
                f"{len(leftovers)} trace(s) of transactions that never committed: {leftovers[:5]}"
            )

    def no_outbox_row_without_a_transaction(self) -> None:
        committed_ids = {(s.service, s.outbox_id) for s in self.committed}
        gone = self._gone_ids(committed_ids)
        strays = [
            f"{svc}#{i}" for (svc, i) in self.snap.status if (svc, i) not in committed_ids | gone
        ]
        if strays:
            self.violation(f"{len(strays)} outbox row(s) nobody committed: {strays[:5]}")

    def no_outbox_id_committed_twice(self) -> None:
        twice = [
            k for k, n in Counter((s.service, s.outbox_id) for s in self.committed).items() if n > 1
        ]
        if twice:  # a committed row vanished in a crash and its id was handed out again
            self.violation(f"{len(twice)} outbox id(s) committed twice: {twice[:5]}")

    def every_committed_transaction_kept_its_business_row(self) -> None:
        no_order = {s.uid for s in self.committed if s.uid not in self.snap.orders}
        if no_order:
            self.violation(f"{len(no_order)} committed transaction(s) lost their business row")

    # -- helpers -------------------------------------------------------------------------
    def _status(self, s: Sent) -> tuple[str, str | None]:
        return self.snap.status.get((s.service, s.outbox_id), ("missing", None))

    def _gone_ids(self, committed_ids: set[Row]) -> set[Row]:
        # An id handed to an insert that rolled back may be handed out again after the
        # server crashed (InnoDB restores its counter from the last durable state): such
        # an id belongs to the committed event that got it second.
        return {(s.service, s.outbox_id) for _, sent in self.not_committed for s in sent} - (
            committed_ids
        )

    def verdict(self) -> SoakResult:
        r = self.result
        r.lost, r.doubled = len(self.lost), len(self.doubled)
        r.details["lost_sample"] = self.lost[:10]
        r.details["doubled_sample"] = self.doubled[:10]
        return r


CHECKS = (
    Judge.every_committed_event_finished,
    Judge.every_effect_applied_once,
    Judge.memory_versions_match_the_upserts,
    Judge.each_stream_committed_in_order,
    Judge.uncommitted_transactions_left_nothing,
    Judge.no_outbox_row_without_a_transaction,
    Judge.no_outbox_id_committed_twice,
    Judge.every_committed_transaction_kept_its_business_row,
)


def verify(engine: Engine, ledger: Ledger, registry: Registry) -> SoakResult:
    """Every committed event against its business effect; rolled-back transactions
    against every table."""
    judge = Judge(Snapshot.read(engine, registry), ledger)
    for check in CHECKS:
        check(judge)
    return judge.verdict()


def _where(s: Sent) -> str:
    return f"{s.event_type}#{s.outbox_id}"
