"""Strict per-key order, for services declared with ``ordering="key"``.

The promise: for one message key, when the business transactions that publish its
events commit one after another, their handlers' database effects commit in that order,
across failures and retries, dead letters, several relays and workers, rebalances,
crashes and redeliveries. (Events of one key from transactions that overlap in time
have no order to keep: the outbox row ids, assigned at insert, decide between them.)

How: a row of an ordered key runs only when no earlier row of its key is unfinished
(pending, published, parked or dead). The consumer checks that in the batch's
transaction; a row that must wait is *parked* (no attempt spent, nothing relayed), and
the transaction that finishes the row it waits for (consumed, or skipped by an
operator) releases the parked rows of that key, which the relay then publishes again in
id order. A dead row keeps its key blocked until an operator requeues it (retried, order
kept) or skips it (the key goes on without it; the row stays, as ``skipped``).

No wake-up is lost: a row is parked only while this transaction holds the lock of the
unfinished row it waits for, and every transaction that finishes a row locks it too and
releases its key's parked rows (when it sees any outside its batch once it holds its
rows' locks); so a release either follows the parking, or the parking sees the row
finished. Maintenance also releases parked rows that wait for nothing (a safety net; it
logs when it does).

Keys do not wait for each other: a parked row costs its own key only.
"""

from __future__ import annotations

import itertools
import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, case, func, select, update
from sqlalchemy.exc import OperationalError

from outbox_app.clock import utcnow
from outbox_app.database import is_lock_busy
from outbox_app.records import UNFINISHED, Delivery, Status
from outbox_app.store import OutboxStore, as_datetime, rowcount

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BlockedKey:
    """A key whose later rows wait: its head (the earliest unfinished row) and what waits."""

    key: str
    head_id: int
    head_status: Status
    head_error: str | None
    head_event_type: str
    parked: int
    since: datetime  # when its oldest parked row was parked


@dataclass
class Gate:
    """Which rows of one batch may run now, for an ordered service. ``blocker[key]`` is
    the id of the unfinished row the key's later rows wait for, if any."""

    blocker: dict[str, int] = field(default_factory=dict)
    parked: dict[int, list[int]] = field(default_factory=lambda: defaultdict(list))
    # Keys with parked rows outside the batch: the only ones a release can wake.
    parked_elsewhere: set[str] = field(default_factory=set)

    def blocked(self, row: Delivery) -> bool:
        key = row.message_key
        if key is None:
            return False
        blocker = self.blocker.get(key)
        return blocker is not None and blocker < row.id

    def must_wait(self, row: Delivery) -> bool:
        """True (and noted, to be parked) when an unfinished earlier row of its key exists."""
        if not self.blocked(row):
            return False
        assert row.message_key is not None
        self.parked[self.blocker[row.message_key]].append(row.id)
        return True

    def not_done(self, row: Delivery) -> None:
        """This row of the batch did not finish (failed, dead, remote work pending): the
        later rows of its key wait for it. Its lock is this transaction's already."""
        key = row.message_key
        if key is not None:
            self.blocker[key] = min(self.blocker.get(key, row.id), row.id)

    @property
    def parked_ids(self) -> list[int]:
        return sorted(i for ids in self.parked.values() for i in ids)


class KeyOrder:
    """The statements of per-key order on one service's outbox table."""

    def __init__(self, store: OutboxStore) -> None:
        self.store = store
        t = self.table = store.table
        waiting = (t.c.id.in_(bindparam("ids", expanding=True)), t.c.status.in_(UNFINISHED[:2]))
        self._park = (
            update(t)
            .where(*waiting)
            .values(status=Status.PARKED.value, next_retry_at=None, updated_at=utcnow())
        )
        self._release = (
            update(t)
            .where(t.c.id.in_(bindparam("ids", expanding=True)), t.c.status == Status.PARKED.value)
            .values(status=Status.PENDING.value, next_retry_at=utcnow(), updated_at=utcnow())
        )
        # Per key of the batch, its earliest unfinished row outside the batch, and whether
        # any of them is parked.
        self._outside = (
            select(
                t.c.message_key,
                func.min(t.c.id),
                func.max(case((t.c.status == Status.PARKED.value, 1), else_=0)),
            )
            .where(
                t.c.message_key.in_(bindparam("keys", expanding=True)),
                t.c.status.in_(UNFINISHED),
                t.c.id.not_in(bindparam("ids", expanding=True)),
            )
            .group_by(t.c.message_key)
        )
        self._park_uncounted = (
            update(t)
            .where(*waiting)
            .values(
                status=Status.PARKED.value,
                next_retry_at=None,
                retry_count=t.c.retry_count - 1,
                last_error=None,
                updated_at=utcnow(),
            )
        )

    # -- the consumer's transaction -------------------------------------------------------
    def gate(self, conn: Connection, rows: dict[int, Delivery]) -> Gate:
        """For the batch's (locked) rows, the earliest unfinished row of each key outside
        the batch, locked, when a row of the batch comes after it."""
        gate = Gate()
        last: dict[str, int] = {}
        for row in rows.values():
            if row.message_key is not None and row.status.value in UNFINISHED:
                last[row.message_key] = max(last.get(row.message_key, row.id), row.id)
                if row.status is Status.DEAD:  # a redelivered dead row still blocks its key
                    gate.not_done(row)
        if not last:
            return gate
        outside = conn.execute(self._outside, {"keys": list(last), "ids": list(rows)}).all()
        for key, head, parked in outside:
            if parked:
                gate.parked_elsewhere.add(key)
            if head < last[key]:
                locked = self._lock_unfinished(conn, key, int(head), set(rows), last[key])
                if locked is not None:
                    gate.blocker[key] = locked
        return gate

    def _lock_unfinished(
        self, conn: Connection, key: str, head: int, batch: set[int], before: int
    ) -> int | None:
        """Lock the earliest unfinished row of ``key`` before ``before`` and outside the
        batch, starting from ``head``; a row found finished once locked is passed over."""
        t = self.table
        candidate: int | None = head
        while candidate is not None:
            status = conn.execute(
                select(t.c.status).where(t.c.id == candidate).with_for_update()
            ).scalar()
            if status in UNFINISHED:
                return candidate
            candidate = conn.execute(
                select(func.min(t.c.id)).where(
                    t.c.message_key == key,
                    t.c.status.in_(UNFINISHED),
                    t.c.id > candidate,
                    t.c.id < before,
                    t.c.id.not_in(list(batch)),
                )
            ).scalar()
        return None

    def settle(
        self, conn: Connection, gate: Gate, finished_keys: Iterable[str], counted: set[int]
    ) -> int:
        """In the batch's transaction, after its outcomes: release what waited for the rows
        it finished, then park the rows that wait (in that order, so that a row parked now
        stays parked). A row whose attempt was counted when it started, and that did not
        run after all, gets it back. Returns how many were parked.

        Only keys with parked rows outside the batch (``gate.parked_elsewhere``, read
        after the batch's rows were locked) are released: a row parked behind a row of
        this batch was parked by a transaction that held that row's lock and committed
        before this one took it, so it is among them. For the other keys the release is
        a round trip for nothing, and most batches have no such key."""
        self.store.release_parked(conn, [k for k in finished_keys if k in gate.parked_elsewhere])
        parked = gate.parked_ids
        plain = [i for i in parked if i not in counted]
        uncount = [i for i in parked if i in counted]
        if plain:
            conn.execute(self._park, {"ids": plain})
        if uncount:
            conn.execute(self._park_uncounted, {"ids": uncount})
        return len(parked)

    # -- operators -------------------------------------------------------------------------
    def skip(self, ids: Sequence[int]) -> list[int]:
        """dead -> skipped (the key goes on without them); returns the ids skipped."""
        t = self.table
        with self.store.engine.begin() as conn:
            found = conn.execute(
                select(t.c.id, t.c.message_key)
                .where(t.c.id.in_(list(ids)), t.c.status == Status.DEAD.value)
                .order_by(t.c.id)
                .with_for_update()
            ).all()
            done = [int(i) for i, _ in found]
            if done:
                conn.execute(
                    update(t)
                    .where(t.c.id.in_(done), t.c.status == Status.DEAD.value)
                    .values(status=Status.SKIPPED.value, updated_at=utcnow())
                )
                self.store.release_parked(conn, [k for _, k in found])
        if done:
            log.info("skipped %d dead row(s) of service %s: ids %s", len(done), self.service, done)
        return done

    @property
    def service(self) -> str:
        return self.store.route.service

    def blocked(self, limit: int = 50) -> list[BlockedKey]:
        """Keys with parked rows, the longest waiting first, with each one's head row."""
        t = self.table
        with self.store.engine.connect() as conn:
            waiting = conn.execute(
                select(t.c.message_key, func.count(), func.min(t.c.updated_at))
                .where(t.c.status == Status.PARKED.value)
                .group_by(t.c.message_key)
                .order_by(func.min(t.c.updated_at))
                .limit(limit)
            ).all()
            out = []
            for key, parked, since in waiting:
                head = conn.execute(
                    select(t.c.id, t.c.status, t.c.last_error, t.c.event_type)
                    .where(
                        t.c.message_key == key,
                        t.c.status.in_(UNFINISHED),
                        t.c.status != Status.PARKED.value,
                    )
                    .order_by(t.c.id)
                    .limit(1)
                ).first()
                if head is None:  # all parked: released by the next maintenance round
                    continue
                out.append(
                    BlockedKey(
                        key,
                        int(head[0]),
                        Status(head[1]),
                        head[2],
                        head[3],
                        int(parked),
                        as_datetime(since),
                    )
                )
        return out

    def release_orphans(self, limit: int = 1000) -> int:
        """Parked rows that wait for nothing (no unfinished, unparked row of their key
        before them): released, a safety net for a wake-up that went missing.

        Each key is checked and released in one transaction that holds the locks of the
        key's unfinished rows, read as committed at that moment: a check spread over
        statements without them saw a key whose head had just finished and released its
        rows, and then released a row parked a moment later behind one of those (a
        false "missed wake-up"). A key whose rows a consumer holds is in flux: it is
        left to the next round."""
        t = self.table
        with self.store.engine.connect() as conn:
            keys = conn.execute(
                select(t.c.message_key)
                .where(t.c.status == Status.PARKED.value)
                .group_by(t.c.message_key)
                .limit(limit)
            ).scalars()
            waiting = [k for k in keys if k is not None]
        released = 0
        for key in waiting:
            try:
                released += self._release_orphans_of(key)
            except OperationalError as exc:
                if not is_lock_busy(exc):
                    raise
        return released

    def _release_orphans_of(self, key: str) -> int:
        t = self.table
        with self.store.engine.begin() as conn:
            rows = conn.execute(
                select(t.c.id, t.c.status)
                .where(t.c.message_key == key, t.c.status.in_(UNFINISHED))
                .order_by(t.c.id)
                .with_for_update(nowait=True)
            ).all()
            orphans = list(itertools.takewhile(lambda r: r[1] == Status.PARKED.value, rows))
            if not orphans:
                return 0
            return rowcount(conn.execute(self._release, {"ids": [int(i) for i, _ in orphans]}))


def ordered_keys(rows: Iterable[Any]) -> list[str]:
    return sorted({r.message_key for r in rows if getattr(r, "message_key", None) is not None})
