"""The consume path of one service: a batch of envelopes in one transaction.

Rows are locked in id order; rows already consumed or dead are skipped (duplicate
delivery); each handler runs in its own savepoint so one failure does not undo the
others; successes are marked consumed and failures recorded in the same
transaction. Handlers with remote work run it after the commit, and only then is
their row consumed.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session

from outbox_app.context import Event, HandlerContext, WriteBuffer
from outbox_app.envelope import BadEnvelope, Envelope, decode
from outbox_app.errors import DatabaseUnavailable, PermanentFailure
from outbox_app.payloads import coerce
from outbox_app.records import Delivery, Status
from outbox_app.registry import HandlerSpec
from outbox_app.worker.batching import run_batches
from outbox_app.worker.runtime import Runtime

log = logging.getLogger(__name__)

REMOTE_TIMEOUT_S = 30.0


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


class ServiceConsumer:
    def __init__(self, runtime: Runtime, service: str) -> None:
        self.rt = runtime
        self.service = service
        self.store = runtime.stores[service]
        self._announced = False

    async def agent(self, stream: AsyncIterator[Any]) -> None:
        """The Faust agent body for this service's topic."""
        s = self.rt.settings
        await self.rt.ready.wait()
        if not self._announced:
            self._announced = True
            log.info(
                "consumer %s started: topic %s -> table %s, batch %d",
                self.service,
                self.store.route.topic,
                self.store.route.table,
                s.consumer_batch,
            )
        # Acks are ours: an offset moves on only after its batch was handled.
        events = stream.noack()  # type: ignore[attr-defined]

        async def handle_events(batch: list[Any]) -> None:
            await self.handle([event.value for event in batch])
            for event in batch:
                await events.ack(event)

        await run_batches(events.events(), handle_events, s.consumer_batch)

    async def handle(self, values: list[Any]) -> BatchOutcome:
        """Handle one batch of raw records; never raises for bad records or handlers."""
        envelopes: list[Envelope] = []
        poison = 0
        for value in values:
            try:
                envelopes.append(decode(value, self.service))
            except BadEnvelope as exc:
                poison += 1
                log.warning(
                    "consumer %s: dropped a record that is not an outbox envelope: %s",
                    self.service,
                    exc,
                )
        outcome = await self._process_with_retry(envelopes) if envelopes else BatchOutcome()
        outcome.poison = poison
        if outcome.remote:
            await self._run_remote(outcome)
        self._observe(outcome)
        return outcome

    async def _process_with_retry(self, envelopes: list[Envelope]) -> BatchOutcome:
        delay = 0.2
        while True:
            try:
                return await self.rt.executor.run(self.process, envelopes)
            except (DatabaseUnavailable, OperationalError) as exc:
                # Lost connection, lock timeout, or a deadlock the executor's immediate
                # reruns did not get past: the transaction rolled back whole, so the
                # batch can simply run again.
                log.warning(
                    "consumer %s: batch of %d rolled back (%s); retrying in %.1fs",
                    self.service,
                    len(envelopes),
                    _short(exc),
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    def process(self, envelopes: list[Envelope]) -> BatchOutcome:
        """Blocking: the database part of a batch, in one transaction.

        Handlers first run together in the batch's transaction without savepoints (two
        round trips saved per batch); if any of them fails, that transaction is rolled
        back and the batch runs again with each handler in a session of its own whose
        transaction is a savepoint, so a failure (or a handler's own rollback) undoes
        that handler's writes and nothing else.
        """
        try:
            return self._process(envelopes, isolated=False)
        except _IsolateHandlers:
            return self._process(envelopes, isolated=True)

    def _process(self, envelopes: list[Envelope], *, isolated: bool) -> BatchOutcome:
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
                _id_list(out.unknown_ids),
            )
        return out

    def _prepare(
        self, session: Session, buffer: WriteBuffer, row: Delivery, out: BatchOutcome
    ) -> tuple[HandlerSpec, HandlerContext] | None:
        """The handler and its context, or None when the row went dead (no handler for
        its event type, or a payload that does not decode)."""
        spec = self.rt.registry.handler_for(row.event_type)
        if spec is None or spec.service != self.service:
            out.dead[row.id] = f"unknown event type {row.event_type!r} for service {self.service!r}"
            log.error(
                "consumer %s: no handler for %s: row is dead",
                self.service,
                _where(self.service, row),
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
                _where(self.service, row),
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
        return spec, HandlerContext(session, event, payload, self.rt.registry, buffer)

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
            where = _where(self.service, row)
            try:
                result = spec.func(ctx)
                buffer.flush(session)
                session.commit()  # releases the handler's savepoint
            except PermanentFailure as exc:
                session.rollback()
                out.dead[row.id] = f"permanent failure: {exc}"
                log.error(
                    "consumer %s: handler gave up on %s: %s: row is dead", self.service, where, exc
                )
                return
            except DBAPIError as exc:
                if exc.connection_invalidated:
                    raise  # the whole transaction is gone: retry the batch
                session.rollback()
                out.failed[row.id] = _short(exc)
                log.warning(
                    "consumer %s: handler failed for %s: %s", self.service, where, _short(exc)
                )
                return
            except Exception as exc:  # noqa: BLE001 - any handler error is a failed attempt
                session.rollback()
                out.failed[row.id] = f"{type(exc).__name__}: {exc}"
                log.warning(
                    "consumer %s: handler failed for %s (attempt %d): %s: %s",
                    self.service,
                    where,
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

    async def _run_remote(self, outcome: BatchOutcome) -> None:
        """Remote work after the commit; its row is consumed only when it succeeded."""
        work = outcome.remote
        results = await asyncio.gather(
            *(
                asyncio.wait_for(w.spec.after_commit(w.event, w.result), REMOTE_TIMEOUT_S)  # type: ignore[misc]
                for w in work
            ),
            return_exceptions=True,
        )
        ok = [w.event.outbox_id for w, r in zip(work, results, strict=True) if r is None]
        failed = {
            w.event.outbox_id: f"remote work failed: {type(r).__name__}: {r}"
            for w, r in zip(work, results, strict=True)
            if isinstance(r, BaseException)
        }
        for row_id, reason in failed.items():
            log.warning("consumer %s: outbox id %d: %s", self.service, row_id, reason)
        if ok:
            await self.rt.executor.run(self.store.mark_consumed, ok)
            outcome.consumed.extend(ok)
        if failed:
            res = await self.rt.executor.run(self.store.record_failures, failed)
            outcome.failed.update({i: failed[i] for i in res.retried})
            outcome.dead.update({i: failed[i] for i in res.dead})

    def _observe(self, out: BatchOutcome) -> None:
        m, s = self.rt.metrics, self.service
        m.consumed.labels(s).inc(len(out.consumed))
        m.handler_failures.labels(s).inc(len(out.failed) + len(out.dead))
        m.dead.labels(s).inc(len(out.dead))
        m.duplicates.labels(s).inc(len(out.duplicates))
        m.poison.labels(s).inc(out.poison + len(out.unknown_ids))
        hist = m.end_to_end.labels(s)
        for latency in out.latencies:
            hist.observe(latency)


def _id_list(ids: list[int], shown: int = 10) -> str:
    more = f" and {len(ids) - shown} more" if len(ids) > shown else ""
    return "ids " + ", ".join(map(str, ids[:shown])) + more


def _where(service: str, row: Delivery) -> str:
    return f"event type {row.event_type!r}, service {service!r}, outbox id {row.id}"


def _short(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    return f"{type(exc).__name__}: {orig if orig is not None else exc}"[:500]
