"""The state machine: every outbox transition as one guarded statement or one short
transaction. Only this module builds outbox SQL; the relay, agents, web view and CLI
call it. Methods are blocking: async callers run them through ``DatabaseExecutor``.

A claim leases rows instead of holding their locks across the broker round trip: it
pushes ``next_retry_at`` to a lease deadline that doubles as a claim token, so other
relays skip the rows, a crashed relay's rows come back when the lease ends, and
``mark_published`` only touches rows still carrying the token.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    Connection,
    CursorResult,
    Engine,
    Select,
    Update,
    bindparam,
    case,
    delete,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session

from outbox_app.clock import db_time, utcnow
from outbox_app.driver_sql import DriverStatement, driver_sql_applies
from outbox_app.records import LIVE, Delivery, OutboxRow, Status
from outbox_app.retry import RetryPolicy
from outbox_app.routing import Route
from outbox_app.schema import MAX_ERROR_CHARS, outbox_table
from outbox_app.statements import hot_statements

log = logging.getLogger(__name__)

Executor = Connection | Session


@dataclass(frozen=True)
class Claim:
    rows: list[Delivery]
    token: datetime  # the lease deadline written to each claimed row

    @property
    def ids(self) -> list[int]:
        return [r.id for r in self.rows]


# Rows of one claim that the broker acked, with the claim's token: pending -> published.
Marks = tuple[Sequence[int], datetime]


@dataclass(frozen=True)
class FailureOutcome:
    retried: list[int]
    dead: list[int]


def truncate_error(reason: str) -> str:
    return reason if len(reason) <= MAX_ERROR_CHARS else reason[: MAX_ERROR_CHARS - 1] + "…"


class OutboxStore:
    def __init__(self, engine: Engine, route: Route, policy: RetryPolicy | None = None) -> None:
        self.engine = engine
        self.route = route
        self.table = outbox_table(route)
        self.policy = policy or RetryPolicy()
        self._sql = hot_statements(self.table)
        # The hot statements as driver SQL, built on first use (driver_sql.py).
        self._driver: dict[Select[Any] | Update, DriverStatement] | None = (
            {} if driver_sql_applies(engine) else None
        )

    def __repr__(self) -> str:
        return f"OutboxStore(service={self.route.service!r}, table={self.route.table!r})"

    def _hot(
        self,
        conn: Executor,
        statement: Select[Any] | Update,
        ids: Sequence[int] | None = None,
        **params: Any,
    ) -> Any:
        """Run one of the hot statements: as driver SQL where that applies."""
        if self._driver is not None and isinstance(conn, Connection):
            driver = self._driver.get(statement)
            if driver is None:
                driver = DriverStatement.build(statement, self.engine.dialect)
                self._driver[statement] = driver
            return driver.execute(conn, ids or (), **params)
        if ids is not None:
            params["ids"] = list(ids)
        return conn.execute(statement, params)

    @contextmanager
    def _tx(self, conn: Executor | None) -> Iterator[Executor]:
        if conn is not None:
            yield conn
        else:
            with self.engine.begin() as own:
                yield own

    # -- write path ------------------------------------------------------------------
    def add(
        self,
        conn: Executor,
        *,
        event_type: str,
        payload_json: str,
        key: str | None,
        max_retry: int,
        traceparent: str | None = None,
    ) -> int:
        """Insert a pending row inside the caller's transaction (never commits)."""
        params = row_params(self.route, event_type, payload_json, key, max_retry, traceparent)
        return inserted_id(conn.execute(self._sql.add, params))

    # -- relay -----------------------------------------------------------------------
    def claim_due(
        self, limit: int, lease_s: float, published: Sequence[Marks] = ()
    ) -> Claim | None:
        """Lease up to ``limit`` due pending rows; concurrent relays get disjoint sets.
        ``published``: earlier claims' acked rows, marked in the same transaction (one
        commit per relay round instead of two)."""
        with self.engine.begin() as conn:
            for ids, token in published:
                self._hot(conn, self._sql.mark_published, ids, token=token)
            found = self._hot(conn, self._sql.claim(limit, lease_s)).all()
            if not found:
                return None
            token = found[0][-1]
            claimed = [Delivery.from_row(r[:-1]) for r in found]
            self._hot(conn, self._sql.claim_lease, [r.id for r in claimed], token=token)
        return Claim(claimed, as_datetime(token))

    def mark_published(self, ids: Sequence[int], token: datetime) -> int:
        """pending -> published for rows still holding this claim's token."""
        if not ids:
            return 0
        with self.engine.begin() as conn:
            result = self._hot(conn, self._sql.mark_published, ids, token=token)
        return rowcount(result)

    def release_claim(self, ids: Sequence[int], token: datetime) -> int:
        """Give claimed rows back, due now and with no attempt spent: the broker could not
        take them (an outage is not the events' fault)."""
        if not ids:
            return 0
        with self.engine.begin() as conn:
            result = self._hot(conn, self._sql.release, ids, token=token)
        return rowcount(result)

    # -- failures --------------------------------------------------------------------
    def record_failures(
        self,
        errors: Mapping[int, str],
        conn: Executor | None = None,
        *,
        token: datetime | None = None,
        counted: Collection[int] = (),
    ) -> FailureOutcome:
        """One failed attempt per row: back to pending after a backoff, or dead when the
        attempts are spent. Rows already consumed or dead are left alone; with ``token``
        (a relay's claim) only rows still holding it are touched. ``counted`` rows had
        this attempt counted when it started (``mark_started``)."""
        if not errors:
            return FailureOutcome([], [])
        t = self.table
        with self._tx(conn) as c:
            query = (
                select(t.c.id, t.c.retry_count, t.c.max_retry)
                .where(t.c.id.in_(list(errors)), t.c.status.in_(LIVE))
                .order_by(t.c.id)
                .with_for_update()
            )
            if token is not None:
                query = query.where(t.c.next_retry_at == token)
            params, retried, dead = [], [], []
            for row_id, retry_count, max_retry in c.execute(query).all():
                before = retry_count - 1 if row_id in counted else retry_count
                delay = self.policy.next_step(before, max_retry)
                if delay is None:
                    dead.append(row_id)
                else:
                    retried.append(row_id)
                params.append(
                    {
                        "b_id": row_id,
                        "b_status": (Status.DEAD if delay is None else Status.PENDING).value,
                        "b_delay": delay or 0.0,
                        "b_error": truncate_error(errors[row_id]),
                        "b_inc": 0 if row_id in counted else 1,
                    }
                )
            if params:
                c.execute(
                    update(t)
                    .where(t.c.id == bindparam("b_id"), _is_live(t))
                    .values(
                        status=bindparam("b_status"),
                        retry_count=t.c.retry_count + bindparam("b_inc"),
                        next_retry_at=case(
                            (bindparam("b_status") == Status.DEAD.value, None),
                            else_=db_time(bindparam("b_delay")),
                        ),
                        last_error=bindparam("b_error"),
                        updated_at=utcnow(),
                    ),
                    params,
                )
        return FailureOutcome(retried, dead)

    def mark_dead(
        self,
        reasons: Mapping[int, str],
        conn: Executor | None = None,
        *,
        counted: Collection[int] = (),
    ) -> int:
        """pending/published -> dead for unrecoverable rows (unknown type, bad payload,
        ``PermanentFailure``, attempts spent by crashes); the attempt that found out
        counts (``counted``: it was counted when it started)."""
        if not reasons:
            return 0
        t = self.table
        with self._tx(conn) as c:
            result = c.execute(
                update(t)
                .where(t.c.id == bindparam("b_id"), _is_live(t))
                .values(
                    status=Status.DEAD.value,
                    retry_count=t.c.retry_count + bindparam("b_inc"),  # the delivery that knew
                    next_retry_at=None,
                    last_error=bindparam("b_error"),
                    updated_at=utcnow(),
                ),
                [
                    {"b_id": i, "b_error": truncate_error(r), "b_inc": 0 if i in counted else 1}
                    for i, r in reasons.items()
                ],
            )
        return rowcount(result)

    # -- consumer --------------------------------------------------------------------
    def lock_for_consume(self, conn: Executor, ids: Iterable[int]) -> dict[int, Delivery]:
        """Lock the rows (in id order, so batches never deadlock each other)."""
        wanted = sorted(set(ids))
        if not wanted:
            return {}
        rows = self._hot(conn, self._sql.lock, wanted).all()
        return {r.id: Delivery.from_row(r) for r in rows}

    def mark_started(self, ids: Sequence[int], conn: Executor) -> int:
        """Count the attempt before the handler runs (committed by the caller first): if the
        worker dies while it runs, the attempt stays counted, so an event that kills its
        worker every time ends dead. ``last_error`` says so until an outcome replaces it."""
        if not ids:
            return 0
        return rowcount(self._hot(conn, self._sql.mark_started, ids))

    def mark_consumed(
        self,
        ids: Sequence[int],
        conn: Executor | None = None,
        *,
        counted: Collection[int] = (),
        release: Iterable[str] = (),
    ) -> int:
        """pending/published -> consumed; inside the handler's transaction when given.
        ``counted`` rows had the successful attempt counted when it started: uncounted.
        ``release``: keys of an ordered service whose parked rows may go on now."""
        if not ids:
            return 0
        with self._tx(conn) as c:
            plain = [i for i in ids if i not in counted]
            n = rowcount(self._hot(c, self._sql.mark_consumed, plain)) if plain else 0
            started = [i for i in ids if i in counted]
            if started:
                n += rowcount(self._hot(c, self._sql.mark_consumed_started, started))
            self.release_parked(c, release)
        return n

    def release_parked(self, conn: Executor, keys: Iterable[str | None]) -> int:
        """parked -> pending (due now) for these keys of an ordered service: what they
        waited for is finished (see ``outbox_app.ordering``)."""
        wanted = sorted({k for k in keys if k is not None})
        if not wanted:
            return 0
        return rowcount(conn.execute(self._sql.release_parked, {"keys": wanted}))

    # -- operators and maintenance -----------------------------------------------------
    def requeue_dead(
        self, ids: Sequence[int] | None = None, event_type: str | None = None
    ) -> list[int]:
        """dead -> pending with a fresh attempt budget; returns the requeued ids."""
        t = self.table
        with self.engine.begin() as conn:
            query = select(t.c.id).where(t.c.status == Status.DEAD.value).with_for_update()
            if ids is not None:
                query = query.where(t.c.id.in_(list(ids)))
            if event_type is not None:
                query = query.where(t.c.event_type == event_type)
            found = [r for (r,) in conn.execute(query.order_by(t.c.id)).all()]
            for chunk in _chunks(found, 1000):
                conn.execute(
                    update(t)
                    .where(t.c.id.in_(chunk), t.c.status == Status.DEAD.value)
                    .values(
                        status=Status.PENDING.value,
                        retry_count=0,
                        next_retry_at=utcnow(),
                        published_at=None,
                        updated_at=utcnow(),
                    )
                )
        if found:
            log.info(
                "requeued %d dead row(s) of service %s: ids %s",
                len(found),
                self.route.service,
                _id_summary(found),
            )
        return found

    def recover_stale(self, visibility_s: float, limit: int = 1000) -> int:
        """published -> pending when not consumed within the visibility timeout (the broker
        lost the message, or the consumers lag): published again, no attempt spent."""
        t = self.table
        cutoff = db_time(-visibility_s)
        with self.engine.begin() as conn:
            ids = [
                r
                for (r,) in conn.execute(
                    select(t.c.id)
                    .where(t.c.status == Status.PUBLISHED.value, t.c.published_at < cutoff)
                    .order_by(t.c.id)
                    .limit(limit)
                    .with_for_update(skip_locked=True)
                ).all()
            ]
            if not ids:
                return 0
            result = conn.execute(
                update(t)
                .where(
                    t.c.id.in_(ids),
                    t.c.status == Status.PUBLISHED.value,
                    t.c.published_at < cutoff,
                )
                .values(status=Status.PENDING.value, next_retry_at=utcnow(), updated_at=utcnow())
            )
        return rowcount(result)

    def purge_consumed(
        self, older_than_s: float, batch: int = 1000, *, dry_run: bool = False
    ) -> int:
        """Delete consumed rows older than the age, ``batch`` rows per short transaction."""
        t = self.table
        old = (t.c.status == Status.CONSUMED.value) & (t.c.consumed_at < db_time(-older_than_s))
        if dry_run:
            with self.engine.connect() as conn:
                return int(conn.execute(select(func.count()).where(old)).scalar_one())
        total = 0
        while True:
            with self.engine.begin() as conn:
                ids = [
                    r
                    for (r,) in conn.execute(
                        select(t.c.id).where(old).order_by(t.c.id).limit(batch)
                    ).all()
                ]
                if ids:
                    conn.execute(
                        delete(t).where(t.c.id.in_(ids), t.c.status == Status.CONSUMED.value)
                    )
            total += len(ids)
            if len(ids) < batch:
                return total

    def get(self, row_id: int) -> OutboxRow | None:
        t = self.table
        with self.engine.connect() as conn:
            row = conn.execute(select(t).where(t.c.id == row_id)).first()
        return OutboxRow.from_row(row) if row is not None else None


def row_params(
    route: Route,
    event_type: str,
    payload_json: str,
    key: str | None,
    max_retry: int,
    traceparent: str | None,
) -> dict[str, Any]:
    """The parameters of the prebuilt insert of a new pending row."""
    return {
        "event_type": event_type,
        "service_name": route.service,
        "topic": route.topic,
        "message_key": key,
        "payload": payload_json,
        "max_retry": max_retry,
        "traceparent": traceparent,
    }


def inserted_id(result: Any) -> int:
    return int(cast(CursorResult[Any], result).inserted_primary_key[0])  # type: ignore[index]


def rowcount(result: Any) -> int:
    """Rows an UPDATE or DELETE matched."""
    return int(cast(CursorResult[Any], result).rowcount)


def _is_live(t: Any) -> Any:
    # IN (...) expands per call, which executemany cannot do: spell it out.
    return or_(*(t.c.status == s for s in LIVE))


def as_datetime(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))  # SQLite returns text for expressions


def _chunks(items: Sequence[int], size: int) -> Iterator[list[int]]:
    for i in range(0, len(items), size):
        yield list(items[i : i + size])


def _id_summary(ids: Sequence[int]) -> str:
    shown = ", ".join(map(str, ids[:20]))
    return shown + (f" and {len(ids) - 20} more" if len(ids) > 20 else "")
