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

import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from outbox_app.context import Event, HandlerContext, WriteBuffer
from outbox_app.envelope import Envelope
from outbox_app.errors import PermanentFailure, short_error
from outbox_app.payloads import coerce
from outbox_app.records import Delivery, Status
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


class BatchHandling:
    """Runs batches of one service's envelopes against its outbox table."""

    def __init__(self, store: OutboxStore, registry: Registry) -> None:
        self.store = store
        self.registry = registry
        self.service = store.route.service

    def run(self, envelopes: list[Envelope]) -> BatchOutcome:
        """The database part of a batch, in one transaction (see the module docstring)."""
        try:
            return self._run(envelopes, isolated=False)
        except _IsolateHandlers:
            return self._run(envelopes, isolated=True)

    def _run(self, envelopes: list[Envelope], *, isolated: bool) -> BatchOutcome:
        out = BatchOutcome()
        by_id: dict[int, Envelope] = {}
        for env in envelopes:
            if env.outbox_id in by_id:
                out.duplicates.append(env.outbox_id)  # the same row twice in one batch
            by_id[env.outbox_id] = env
        with self.store.engine.connect() as conn, conn.begin() as tx:
            rows = self.store.lock_for_consume(conn, by_id)
            buffer = WriteBuffer()
            # "rollback_only": the session flushes into the batch's transaction and never
            # commits it; a handler that rolls it back is caught below.
            session = Session(bind=conn, join_transaction_mode="rollback_only")
            try:
                for outbox_id in by_id:
                    row = rows.get(outbox_id)
                    if row is None:
                        out.unknown_ids.append(outbox_id)
                    elif row.status in (Status.CONSUMED, Status.DEAD):
                        out.duplicates.append(outbox_id)
                    elif isolated:
                        self._run_isolated(conn, row, out)
                    else:
                        self._run_handler(session, buffer, row, out)
                        if not tx.is_active:
                            raise _IsolateHandlers("a handler rolled back the transaction")
                if not isolated:
                    try:
                        buffer.flush(session)
                        session.flush()
                    except DBAPIError as exc:
                        if exc.connection_invalidated:
                            raise
                        raise _IsolateHandlers from exc
            finally:
                session.close()
            self.store.mark_consumed(out.consumed, conn)
            self.store.mark_dead(out.dead, conn)
            outcome = self.store.record_failures(out.failed, conn)
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

    def _prepare(
        self, session: Session, buffer: WriteBuffer, row: Delivery, out: BatchOutcome
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
            payload = coerce(spec.payload_type, json.loads(row.payload))
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
            attempt=row.retry_count + 1,
            created_at=row.created_at,
            traceparent=row.traceparent,
        )
        return spec, HandlerContext(session, event, payload, self.registry, buffer)

    def _run_handler(
        self, session: Session, buffer: WriteBuffer, row: Delivery, out: BatchOutcome
    ) -> None:
        """The optimistic pass: any failure reruns the batch isolated."""
        prepared = self._prepare(session, buffer, row, out)
        if prepared is None:
            return
        spec, ctx = prepared
        try:
            result = spec.func(ctx)
        except DBAPIError as exc:
            if exc.connection_invalidated:
                raise
            raise _IsolateHandlers from exc
        except Exception as exc:
            raise _IsolateHandlers from exc
        self._succeeded(spec, ctx.event, result, out)

    def _run_isolated(self, conn: Connection, row: Delivery, out: BatchOutcome) -> None:
        """The isolated pass: the handler's writes live in its own savepoint."""
        buffer = WriteBuffer()
        with Session(bind=conn, join_transaction_mode="create_savepoint") as session:
            prepared = self._prepare(session, buffer, row, out)
            if prepared is None:
                return
            spec, ctx = prepared
            at = where(self.service, row)
            try:
                result = spec.func(ctx)
                buffer.flush(session)
                session.commit()  # releases the handler's savepoint
            except PermanentFailure as exc:
                session.rollback()
                out.dead[row.id] = f"permanent failure: {exc}"
                log.error(
                    "consumer %s: handler gave up on %s: %s: row is dead", self.service, at, exc
                )
                return
            except DBAPIError as exc:
                if exc.connection_invalidated:
                    raise  # the whole transaction is gone: retry the batch
                session.rollback()
                out.failed[row.id] = short_error(exc)
                log.warning(
                    "consumer %s: handler failed for %s: %s", self.service, at, short_error(exc)
                )
                return
            except Exception as exc:  # noqa: BLE001 - any handler error is a failed attempt
                session.rollback()
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
        self._succeeded(spec, ctx.event, result, out)

    @staticmethod
    def _succeeded(spec: HandlerSpec, event: Event, result: Any, out: BatchOutcome) -> None:
        if spec.after_commit is not None:
            out.remote.append(RemoteWork(spec, event, result))
        else:
            out.consumed.append(event.outbox_id)


def id_list(ids: list[int], shown: int = 10) -> str:
    more = f" and {len(ids) - shown} more" if len(ids) > shown else ""
    return "ids " + ", ".join(map(str, ids[:shown])) + more


def where(service: str, row: Delivery) -> str:
    return f"event type {row.event_type!r}, service {service!r}, outbox id {row.id}"
