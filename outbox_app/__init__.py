"""outbox_app: a transactional outbox for Python services, as a Faust application."""

from importlib.metadata import PackageNotFoundError, version

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
from outbox_app.publish import apublish, publish
from outbox_app.records import OutboxRow, Status
from outbox_app.registry import Registry, default_registry, handler, load_handlers

try:
    __version__ = version("outbox-app")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0.0.0+unknown"

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
    "__version__",
    "apublish",
    "default_registry",
    "handler",
    "load_handlers",
    "publish",
]
