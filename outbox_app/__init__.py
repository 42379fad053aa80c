"""outbox_app: a transactional outbox for Python services, as a Faust application."""

from outbox_app.context import Event, HandlerContext
from outbox_app.errors import (
    ConfigurationError,
    EventTypeConflict,
    InvalidEvent,
    OutboxError,
    PermanentFailure,
    UnknownEventType,
    WrongService,
)
from outbox_app.publish import publish
from outbox_app.records import OutboxRow, Status
from outbox_app.registry import Registry, default_registry, handler, load_handlers

__all__ = [
    "ConfigurationError",
    "Event",
    "EventTypeConflict",
    "HandlerContext",
    "InvalidEvent",
    "OutboxError",
    "OutboxRow",
    "PermanentFailure",
    "Registry",
    "Status",
    "UnknownEventType",
    "WrongService",
    "default_registry",
    "handler",
    "load_handlers",
    "publish",
]
