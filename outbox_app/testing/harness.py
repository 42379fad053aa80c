"""Run registered handlers against a real database, inside a transaction rolled back at
the end: the consumer's own transaction code (locking, savepoints, retries, dead letters,
ordering) runs unchanged, inside a savepoint of the harness's transaction."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, Transaction, func, select
from sqlalchemy.orm import Session

from outbox_app.context import Event
from outbox_app.envelope import Envelope
from outbox_app.errors import OutboxError
from outbox_app.handling import BatchHandling, BatchOutcome, RemoteWork
from outbox_app.publish import publish
from outbox_app.records import OutboxRow, Status
from outbox_app.redelivery import Redeliveries
from outbox_app.registry import Registry, default_registry
from outbox_app.schema import create_schema, outbox_table
from outbox_app.store import OutboxStore


@dataclass(frozen=True)
class Published:
    """An event a handler published (its row is in the harness's transaction)."""

    event_type: str
    service: str
    key: str | None
    payload: Any  # the stored JSON, decoded
    outbox_id: int


@dataclass(frozen=True)
class RemoteCall:
    """A handler's remote work: what its ``after_commit`` receives once the batch commits."""

    event: Event
    result: Any
    ran: bool  # the harness ran it (run_after_commit=True)
    error: str | None  # what it raised, when it ran and failed


@dataclass(frozen=True)
class Outcome:
    """What one delivery of an outbox row did."""

    outbox_id: int
    service: str
    status: Status  # the row's status afterwards
    attempts: int  # attempts counted against its max_retry: failures (and crashes)
    error: str | None  # the row's last_error (the failure, or why it is dead)
    ran: bool  # the handler ran (False for a duplicate delivery or a parked row)
    duplicate: bool  # the row was finished already: the delivery changed nothing
    published: list[Published] = field(default_factory=list)
    after_commit: RemoteCall | None = None

    @property
    def consumed(self) -> bool:
        return self.status is Status.CONSUMED

    @property
    def failed(self) -> bool:
        """The attempt failed and the row waits for its retry."""
        return self.status is Status.PENDING and self.error is not None

    @property
    def dead(self) -> bool:
        return self.status is Status.DEAD

    @property
    def parked(self) -> bool:
        return self.status is Status.PARKED


class HandlerHarness:
    """Deliver events to their registered handlers the way a worker does, in one outer
    transaction that ``close()`` rolls back.

    ``connection`` and ``session`` are in that transaction: set up and inspect business
    rows with them. ``after_commit`` remote work is recorded and not run, unless
    ``run_after_commit=True`` (then it runs, and its failure is a failed attempt).
    """

    def __init__(
        self,
        engine: Engine,
        registry: Registry | None = None,
        *,
        run_after_commit: bool = False,
        create_tables: bool = True,
    ) -> None:
        self.engine = engine
        self.registry = registry or default_registry
        self.run_after_commit = run_after_commit
        if create_tables:  # DDL commits on MySQL: before the outer transaction begins
            create_schema(engine, self.registry.routes(), self.registry.metadata)
        self.connection: Connection = engine.connect()
        self._outer = self.connection.begin()
        self.session = Session(bind=self.connection, join_transaction_mode="create_savepoint")
        self._batches: dict[str, _NestedBatch] = {}
        self._loop: asyncio.AbstractEventLoop | None = None  # for after_commit, made on use

    def __enter__(self) -> HandlerHarness:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Roll back everything the harness and the handlers wrote."""
        self.session.close()
        if self._loop is not None:
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()
        if self._outer.is_active:
            self._outer.rollback()
        self.connection.close()

    # -- deliveries ----------------------------------------------------------------------
    def publish(
        self, event_type: str, payload: Any, key: str | None = None, *, max_retry: int = 3
    ) -> int:
        """Add an outbox row as business code would (validated the same way); its id."""
        self.session.flush()
        return publish(
            self.connection, event_type, payload, key=key, max_retry=max_retry,
            registry=self.registry,
        )  # fmt: skip

    def deliver(
        self, event_type: str, payload: Any, key: str | None = None, *, max_retry: int = 3
    ) -> Outcome:
        """Publish an event and deliver it to its handler once. ``max_retry`` is small so
        that a test reaches the dead letter in a few ``retry()`` calls."""
        outbox_id = self.publish(event_type, payload, key, max_retry=max_retry)
        return self._run(outbox_id, self.registry.owner(event_type))

    def deliver_row(self, outbox_id: int, service: str) -> Outcome:
        """Deliver the record of an existing outbox row (as the relay would publish it);
        ids are per service table, so the service is named."""
        return self._run(outbox_id, service)

    def deliver_published(self, published: Published) -> Outcome:
        """Deliver an event a handler published (from ``Outcome.published``)."""
        return self._run(published.outbox_id, published.service)

    def redeliver(self, outcome: Outcome) -> Outcome:
        """The same record delivered again (Kafka's at-least-once): a finished row is a
        duplicate and its handler does not run again."""
        return self._run(outcome.outbox_id, outcome.service)

    def retry(self, outcome: Outcome) -> Outcome:
        """The next attempt of a failed row, as when its backoff is over."""
        if not outcome.failed:
            raise OutboxError(
                f"outbox id {outcome.outbox_id} of service {outcome.service} did not fail "
                f"(status {outcome.status.value}): nothing to retry"
            )
        return self._run(outcome.outbox_id, outcome.service)

    def row(self, outbox_id: int, service: str) -> OutboxRow:
        t = outbox_table(self.registry.route(service))
        self.session.flush()
        found = self.connection.execute(select(t).where(t.c.id == outbox_id)).first()
        if found is None:
            raise OutboxError(f"no outbox row {outbox_id} in service {service}")
        return OutboxRow.from_row(found)

    # -- the run -------------------------------------------------------------------------
    def _run(self, outbox_id: int, service: str) -> Outcome:
        self.session.flush()
        batch = self._batch(service)
        marks = self._high_water_marks()
        result = batch.run([_envelope(self.row(outbox_id, service))])
        after = self._after_commit(batch, result)
        row = self.row(outbox_id, service)
        return Outcome(
            outbox_id=outbox_id,
            service=service,
            status=row.status,
            attempts=row.retry_count,
            error=row.last_error,
            ran=outbox_id in result.ran,
            duplicate=outbox_id in result.duplicates,
            published=self._published_since(marks),
            after_commit=after,
        )

    def _after_commit(self, batch: _NestedBatch, result: BatchOutcome) -> RemoteCall | None:
        if not result.remote:
            return None
        work = result.remote[0]
        if not self.run_after_commit:
            return RemoteCall(work.event, work.result, ran=False, error=None)
        error: str | None = None
        try:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()  # one loop, as in a worker
            self._loop.run_until_complete(_remote(work))
        except Exception as exc:  # noqa: BLE001 - a failed remote call is a failed attempt
            error = f"remote work failed: {type(exc).__name__}: {exc}"
        store = batch.store
        if error is None:
            store.mark_consumed([work.event.outbox_id], self.connection, counted=result.counted)
        else:
            store.record_failures({work.event.outbox_id: error}, self.connection)
        return RemoteCall(work.event, work.result, ran=True, error=error)

    def _batch(self, service: str) -> _NestedBatch:
        batch = self._batches.get(service)
        if batch is None:
            store = OutboxStore(self.engine, self.registry.route(service))
            batch = self._batches[service] = _NestedBatch(self.connection, store, self.registry)
        return batch

    def _high_water_marks(self) -> dict[str, int]:
        marks = {}
        for service in self.registry.services:
            t = outbox_table(self.registry.route(service))
            marks[service] = self.connection.execute(select(func.max(t.c.id))).scalar() or 0
        return marks

    def _published_since(self, marks: dict[str, int]) -> list[Published]:
        found: list[Published] = []
        for service, mark in marks.items():
            t = outbox_table(self.registry.route(service))
            rows = self.connection.execute(
                select(t.c.id, t.c.event_type, t.c.message_key, t.c.payload)
                .where(t.c.id > mark)
                .order_by(t.c.id)
            ).all()
            found += [
                Published(r.event_type, service, r.message_key, json.loads(r.payload), r.id)
                for r in rows
            ]
        return sorted(found, key=lambda p: p.outbox_id)


async def _remote(work: RemoteWork) -> None:
    assert work.spec.after_commit is not None  # only such handlers have remote work
    await work.spec.after_commit(work.event, work.result)


class _NestedBatch(BatchHandling):
    """The consumer's batch, with its transaction a savepoint of the harness's."""

    def __init__(self, conn: Connection, store: OutboxStore, registry: Registry) -> None:
        # Deliveries here are never a crashed worker's: only unfinished starts count.
        super().__init__(store, registry, Redeliveries.since(datetime.min))
        self.conn = conn

    @contextmanager
    def transaction(self) -> Iterator[tuple[Connection, Transaction]]:
        savepoint = self.conn.begin_nested()
        try:
            yield self.conn, savepoint
        except BaseException:
            if savepoint.is_active:
                savepoint.rollback()
            raise
        if savepoint.is_active:
            savepoint.commit()


def _envelope(row: OutboxRow) -> Envelope:
    return Envelope(row.id, row.event_type, row.service_name, row.message_key, row.retry_count + 1)
