"""What a handler receives: the event's identity and a session inside the locked transaction."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Table
from sqlalchemy.orm import Session

from outbox_app.errors import HandlerMisuse
from outbox_app.statements import insert_of

if TYPE_CHECKING:
    from outbox_app.registry import Registry


@dataclass(frozen=True)
class Event:
    """Metadata of one delivery of an outbox row."""

    outbox_id: int
    event_type: str
    service: str
    key: str | None
    attempt: int  # 1 for the first run of the handler, 2 for the first retry, ...
    created_at: datetime | None
    traceparent: str | None = None

    @property
    def idempotency_key(self) -> str:
        """Stable across retries and redeliveries: pass it to remote systems."""
        return f"{self.service}:{self.outbox_id}"


class WriteBuffer:
    """Inserts collected from many handlers and sent as one multi-row statement per
    table: a batch of 500 events costs one round trip instead of 500."""

    def __init__(self) -> None:
        self._rows: defaultdict[tuple[Table, tuple[str, ...]], list[dict[str, Any]]] = defaultdict(
            list
        )

    def add(self, table: Table, values: dict[str, Any]) -> None:
        self._rows[(table, tuple(sorted(values)))].append(values)

    def flush(self, executor: Connection | Session) -> None:
        """Send the inserts through ``executor``: the batch's connection when no savepoint
        is involved (the ORM session's execute path costs more than the statement)."""
        rows, self._rows = self._rows, defaultdict(list)
        for (table, _), batch in rows.items():
            executor.execute(insert_of(table), batch)


class HandlerSession(Session):
    """The session a handler gets: a SQLAlchemy ``Session`` inside the transaction that
    holds the outbox row's lock, except that it cannot be committed, rolled back or
    closed: the consumer commits the handler's writes together with the row's new status
    (a handler's own commit would keep its writes while the row is retried).

    ``publish()`` through it notes the service of each event (``published_to``), so that
    once the batch commits this worker's relay of that service polls at once."""

    @property
    def published_to(self) -> set[str]:
        noted: set[str] = self.info.setdefault("outbox_published_to", set())
        return noted

    def commit(self) -> None:
        raise HandlerMisuse(
            "a handler must not commit ctx.session: its writes commit with the outbox row "
            "when it returns; raise an exception to fail the attempt"
        )

    def rollback(self) -> None:
        raise HandlerMisuse(
            "a handler must not roll back ctx.session: raise an exception to fail the "
            "attempt (its writes are then undone), or use ctx.session.begin_nested()"
        )

    def close(self) -> None:
        raise HandlerMisuse("a handler must not close ctx.session: the consumer owns it")

    # The consumer's own calls.
    def finish(self) -> None:
        """Commit (release the savepoint of an isolated handler)."""
        Session.commit(self)

    def undo(self) -> None:
        Session.rollback(self)

    def dispose(self) -> None:
        Session.close(self)


@dataclass
class HandlerContext:
    """Passed to a handler. ``session`` is inside the transaction that holds the outbox
    row's lock; it refuses to commit or roll back (raise to fail)."""

    session: Session
    event: Event
    payload: Any
    registry: Registry = field(repr=False)
    buffer: WriteBuffer = field(default_factory=WriteBuffer, repr=False)

    def insert(self, table: Table, **values: Any) -> None:
        """Insert a row in the handler's transaction, batched with other handlers'
        inserts. Plain values only (column defaults apply); the row is not visible to
        this handler's own queries: use ``session.execute`` when it must be."""
        self.buffer.add(table, values)

    def publish(
        self, event_type: str, payload: Any, key: str | None = None, *, max_retry: int | None = None
    ) -> int:
        """Publish a further event atomically with this handler's writes."""
        from outbox_app.publish import publish

        return publish(
            self.session,
            event_type,
            payload,
            key=key,
            max_retry=max_retry,
            registry=self.registry,
            traceparent=self.event.traceparent,
        )
