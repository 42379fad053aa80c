"""The consume transaction of one batch: lock the rows, run their handlers, record what
happened, commit. Blocking; the worker runs it in the database thread pool.

Rows are locked in id order; rows already consumed or dead are skipped (duplicate
delivery). Handlers first run together without savepoints (two round trips fewer per
event); if any of them fails, that transaction is rolled back and the batch runs again
with each handler in a session of its own whose transaction is a savepoint, so a failure
undoes that handler's writes and nothing else. Successes are marked consumed and failures
recorded in the same transaction. A handler with remote work (``after_commit``) is only
recorded here: its row is consumed once the remote call succeeded after the commit.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Transaction
from sqlalchemy.exc import DBAPIError

from outbox_app.context import Event, HandlerContext, HandlerSession, WriteBuffer
from outbox_app.database import is_transient
from outbox_app.envelope import Envelope
from outbox_app.errors import (
    PERMANENT_HANDLER_ERRORS,
    HandlerMisuse,
    PermanentFailure,
    short_error,
)
from outbox_app.ordering import Gate, KeyOrder
from outbox_app.payloads import coerce
from outbox_app.records import Delivery, Status
from outbox_app.redelivery import Redeliveries
from outbox_app.registry import HandlerSpec, Registry
from outbox_app.store import OutboxStore

log = logging.getLogger(__name__)


class _IsolateHandlers(Exception):
    """A handler failed in the savepoint-free pass: rerun the batch isolated."""


@dataclass
class RemoteWork:
    spec: HandlerSpec
    event: Event
    result: Any


@dataclass
class BatchOutcome:
    consumed: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)
    dead: dict[int, str] = field(default_factory=dict)
    duplicates: list[int] = field(default_factory=list)
    unknown_ids: list[int] = field(default_factory=list)
    poison: int = 0
    remote: list[RemoteWork] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    counted: set[int] = field(default_factory=set)  # attempts counted when they started
    parked: list[int] = field(default_factory=list)  # ordered keys: waiting for an earlier row
    ran: list[int] = field(default_factory=list)  # rows whose handler was called
    published_to: set[str] = field(default_factory=set)  # services handlers published to


class _CountStarts(Exception):
    """Some rows of the batch had their attempt counted before their handler runs (and
    some went dead: their attempts were spent): run the batch again."""

    def __init__(self, counted: set[int], spent: dict[int, str]) -> None:
        self.counted, self.spent = counted, spent


class BatchHandling:
    """Runs batches of one service's envelopes against its outbox table.

    A delivery that may follow a worker crash caused by that very event (``redelivery.py``:
    a row created before this worker got its partitions, or whose previous attempt
    started and never finished) has its attempt counted (committed) before the handler
    runs, so an event that kills its worker every time spends its attempts and ends dead
    instead of looping. Other deliveries skip that extra commit, however old the event.
    Until ``redeliveries`` sees an assignment, every delivery counts its start.
    """

    def __init__(
        self, store: OutboxStore, registry: Registry, redeliveries: Redeliveries | None = None
    ) -> None:
        self.store = store
        self.registry = registry
        self.service = store.route.service
        self.redeliveries = redeliveries if redeliveries is not None else Redeliveries(0.0)
        self.order = KeyOrder(store) if store.route.ordered else None

    @contextmanager
    def transaction(self) -> Iterator[tuple[Connection, Transaction]]:
        """The batch's transaction (the testing helpers run it inside one of their own)."""
        with self.store.engine.connect() as conn, conn.begin() as tx:
            yield conn, tx

    def run(self, envelopes: list[Envelope]) -> BatchOutcome:
        """The database part of a batch, in one transaction (see the module docstring)."""
        counted: set[int] | None = None
        spent: dict[int, str] = {}
        while True:
            try:
                out = self._run(envelopes, counted, isolated=False)
            except _CountStarts as starts:
                counted, spent = starts.counted, starts.spent
                continue
            except _IsolateHandlers:
                out = self._run(envelopes, counted or set(), isolated=True)
            break
        if spent:  # dead before the rerun, which saw them as finished
            out.dead.update(spent)
            out.duplicates = [i for i in out.duplicates if i not in spent]
        return out

    def _run(
        self, envelopes: list[Envelope], counted: set[int] | None, *, isolated: bool
    ) -> BatchOutcome:
        out = BatchOutcome()
        by_id: dict[int, Envelope] = {}
        for env in envelopes:
            if env.outbox_id in by_id:
                out.duplicates.append(env.outbox_id)  # the same row twice in one batch
            by_id[env.outbox_id] = env
        with self.transaction() as (conn, tx):
            rows = self.store.lock_for_consume(conn, by_id)
            gate = self.order.gate(conn, rows) if self.order is not None else None
            if counted is None:
                self._count_starts(conn, tx, rows, gate)  # raises _CountStarts after a commit
                counted = set()
            out.counted = counted
            buffer = WriteBuffer()
            # "rollback_only": the session flushes into the batch's transaction and never
            # commits it; a handler that rolls it back is caught below.
            session = HandlerSession(bind=conn, join_transaction_mode="rollback_only")
            try:
                # An ordered service's rows run in id order: a key's earlier rows first.
                for outbox_id in by_id if gate is None else sorted(by_id):
                    row = rows.get(outbox_id)
                    if row is None:
                        out.unknown_ids.append(outbox_id)
                    elif row.status not in (Status.PENDING, Status.PUBLISHED, Status.PARKED):
                        out.duplicates.append(outbox_id)  # consumed, dead or skipped already
                    elif gate is not None and gate.must_wait(row):
                        continue  # parked below, behind the unfinished row of its key
                    else:
                        if isolated:
                            self._run_isolated(conn, row, out)
                        else:
                            self._run_handler(session, buffer, row, out)
                            if not tx.is_active:
                                raise _IsolateHandlers("a handler rolled back the transaction")
                        if gate is not None and not (out.consumed and out.consumed[-1] == row.id):
                            gate.not_done(row)  # failed, dead, or remote work still to do
                if not isolated:
                    try:
                        # The session's objects first, as its autoflush would; then the
                        # inserts, on the same transaction without the ORM's execute path.
                        session.flush()
                        buffer.flush(conn)
                    except DBAPIError as exc:
                        if is_transient(exc):
                            raise
                        raise _IsolateHandlers from exc
            finally:
                out.published_to |= session.published_to
                session.dispose()
            if gate is not None and self.order is not None:
                finished = [k for i in out.consumed if (k := rows[i].message_key) is not None]
                self.order.settle(conn, gate, finished, counted)
                out.parked = gate.parked_ids
            self.store.mark_consumed(out.consumed, conn, counted=counted)
            self.store.mark_dead(out.dead, conn, counted=counted)
            outcome = self.store.record_failures(out.failed, conn, counted=counted)
        for row_id in outcome.dead:
            out.dead[row_id] = out.failed.pop(row_id)
        now = datetime.now(UTC).replace(tzinfo=None)
        out.latencies = [
            (now - rows[i].created_at).total_seconds() for i in out.consumed if i in rows
        ]
        if out.unknown_ids:
            log.warning(
                "consumer %s: no outbox row for %d id(s) in table %s (%s); acknowledged",
                self.service,
                len(out.unknown_ids),
                self.store.route.table,
                id_list(out.unknown_ids),
            )
        return out

    def _count_starts(
        self, conn: Connection, tx: Transaction, rows: dict[int, Delivery], gate: Gate | None
    ) -> None:
        """Count the attempts of suspect rows before their handlers run (see the class
        docstring); a row whose attempts crashes used up goes dead without running. Rows
        that wait for an earlier row of their key do not start."""
        suspect = self.redeliveries.suspect
        suspects = [
            r
            for r in rows.values()
            if r.status in (Status.PENDING, Status.PUBLISHED, Status.PARKED)
            and suspect(r.created_at, r.started)
            and not (gate is not None and gate.blocked(r))
        ]
        if not suspects:
            return
        spent = {
            r.id: f"attempts spent: the worker stopped while handling it ({r.retry_count} of "
            f"{r.max_retry} attempts)"
            for r in suspects
            if r.retry_count >= r.max_retry
        }
        for row_id, reason in spent.items():
            log.error("consumer %s: outbox id %d: %s: row is dead", self.service, row_id, reason)
        self.store.mark_dead(spent, conn, counted=spent)
        starting = [r.id for r in suspects if r.id not in spent]
        self.store.mark_started(starting, conn)
        tx.commit()
        raise _CountStarts(set(starting), spent)

    def _prepare(
        self, session: HandlerSession, buffer: WriteBuffer, row: Delivery, out: BatchOutcome
    ) -> tuple[HandlerSpec, HandlerContext] | None:
        """The handler and its context, or None when the row went dead (no handler for
        its event type, or a payload that does not decode)."""
        spec = self.registry.handler_for(row.event_type)
        if spec is None or spec.service != self.service:
            out.dead[row.id] = f"unknown event type {row.event_type!r} for service {self.service!r}"
            log.error(
                "consumer %s: no handler for %s: row is dead",
                self.service,
                where(self.service, row),
            )
            return None
        try:
            payload = coerce(spec.payload_type, row.payload, strict=spec.strict)
        except ValueError as exc:
            out.dead[row.id] = f"undecodable payload: {exc}"
            log.error(
                "consumer %s: bad payload (%s) for %s: row is dead",
                self.service,
                exc,
                where(self.service, row),
            )
            return None
        event = Event(
            outbox_id=row.id,
            event_type=row.event_type,
            service=self.service,
            key=row.message_key,
            # retry_count already holds this attempt when it was counted as it started
            attempt=row.retry_count + (0 if row.id in out.counted else 1),
            created_at=row.created_at,
            traceparent=row.traceparent,
        )
        return spec, HandlerContext(session, event, payload, self.registry, buffer)

    def _run_handler(
        self, session: HandlerSession, buffer: WriteBuffer, row: Delivery, out: BatchOutcome
    ) -> None:
        """The optimistic pass: any failure reruns the batch isolated."""
        prepared = self._prepare(session, buffer, row, out)
        if prepared is None:
            return
        spec, ctx = prepared
        out.ran.append(row.id)
        try:
            result = call(spec, ctx)
        except DBAPIError as exc:
            if is_transient(exc):
                raise
            raise _IsolateHandlers from exc
        except Exception as exc:
            raise _IsolateHandlers from exc
        self._succeeded(spec, ctx.event, result, out)

    def _run_isolated(self, conn: Connection, row: Delivery, out: BatchOutcome) -> None:
        """The isolated pass: the handler's writes live in its own savepoint."""
        buffer = WriteBuffer()
        session = HandlerSession(bind=conn, join_transaction_mode="create_savepoint")
        try:
            prepared = self._prepare(session, buffer, row, out)
            if prepared is None:
                return
            spec, ctx = prepared
            at = where(self.service, row)
            out.ran.append(row.id)
            try:
                result = call(spec, ctx)
                buffer.flush(session)
                session.finish()  # releases the handler's savepoint
            except PERMANENT_HANDLER_ERRORS as exc:
                session.undo()
                what = str(exc) if type(exc) is PermanentFailure else short_error(exc)
                out.dead[row.id] = f"permanent failure: {what}"
                log.error(
                    "consumer %s: handler gave up on %s: %s: row is dead", self.service, at, exc
                )
                return
            except DBAPIError as exc:
                if is_transient(exc):
                    raise  # the database, not the event: the whole batch runs again
                session.undo()
                out.failed[row.id] = short_error(exc)
                log.warning(
                    "consumer %s: handler failed for %s: %s", self.service, at, short_error(exc)
                )
                return
            except Exception as exc:  # noqa: BLE001 - any handler error is a failed attempt
                session.undo()
                out.failed[row.id] = f"{type(exc).__name__}: {exc}"
                log.warning(
                    "consumer %s: handler failed for %s (attempt %d): %s: %s",
                    self.service,
                    at,
                    ctx.event.attempt,
                    type(exc).__name__,
                    exc,
                )
                return
        finally:
            out.published_to |= session.published_to
            session.dispose()
        self._succeeded(spec, ctx.event, result, out)

    @staticmethod
    def _succeeded(spec: HandlerSpec, event: Event, result: Any, out: BatchOutcome) -> None:
        if spec.after_commit is not None:
            out.remote.append(RemoteWork(spec, event, result))
        else:
            out.consumed.append(event.outbox_id)


def call(spec: HandlerSpec, ctx: HandlerContext) -> Any:
    """Run the handler; a handler that returns a coroutine (an ``async def`` that slipped
    past registration, or a wrapper around one) did nothing: refuse it."""
    result = spec.func(ctx)
    if inspect.isawaitable(result):
        close = getattr(result, "close", None)
        if close is not None:
            close()  # never awaited: no "coroutine was never awaited" warning
        raise HandlerMisuse(
            f"handler {spec.name} returned an awaitable: handlers run inside the database "
            "transaction in a worker thread and must be plain functions; put async work in "
            "after_commit="
        )
    return result


def id_list(ids: list[int], shown: int = 10) -> str:
    more = f" and {len(ids) - shown} more" if len(ids) > shown else ""
    return "ids " + ", ".join(map(str, ids[:shown])) + more


def where(service: str, row: Delivery) -> str:
    return f"event type {row.event_type!r}, service {service!r}, outbox id {row.id}"
