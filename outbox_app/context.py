"""What a handler receives: the event's identity and a session inside the locked transaction."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from .registry import Registry


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


@dataclass
class HandlerContext:
    """Passed to a handler. ``session`` is inside the transaction that holds the outbox
    row's lock; the handler must not commit or roll it back (raise to fail)."""

    session: Session
    event: Event
    payload: Any
    registry: Registry = field(repr=False)

    def publish(
        self, event_type: str, payload: Any, key: str | None = None, *, max_retry: int | None = None
    ) -> int:
        """Publish a further event atomically with this handler's writes."""
        from .publish import publish

        return publish(
            self.session,
            event_type,
            payload,
            key=key,
            max_retry=max_retry,
            registry=self.registry,
            traceparent=self.event.traceparent,
        )
