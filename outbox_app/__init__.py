"""outbox_app: a transactional outbox for Python services, as a Faust application."""

from .context import Event, HandlerContext
from .errors import (
    ConfigurationError,
    EventTypeConflict,
    InvalidEvent,
    OutboxError,
    PermanentFailure,
    UnknownEventType,
    WrongService,
)
from .publish import publish
from .records import OutboxRow, Status
from .registry import Registry, default_registry, handler

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
    "publish",
]
