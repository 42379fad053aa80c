"""The project's exception types: one base class, each message names what was wrong."""

from __future__ import annotations


class OutboxError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigurationError(OutboxError):
    """A setting, route or handler registration that cannot work."""


class UnknownEventType(OutboxError):
    def __init__(self, event_type: str) -> None:
        self.event_type = event_type
        super().__init__(
            f"unknown event type {event_type!r}: no service owns it; register it with "
            "@handler(event_type, service=...) in a handler module or "
            "registry.register_event(event_type, service)"
        )


class EventTypeConflict(ConfigurationError):
    def __init__(self, event_type: str, owner: str, other: str) -> None:
        self.event_type, self.owner, self.other = event_type, owner, other
        super().__init__(
            f"event type {event_type!r} is owned by service {owner!r} and cannot also be "
            f"registered to service {other!r}"
        )


class WrongService(OutboxError):
    def __init__(self, event_type: str, owner: str, store_service: str) -> None:
        self.event_type, self.owner, self.store_service = event_type, owner, store_service
        super().__init__(
            f"event type {event_type!r} belongs to service {owner!r}, not to service "
            f"{store_service!r} that this store is bound to"
        )


class UnknownService(OutboxError):
    def __init__(self, service: str, known: list[str]) -> None:
        self.service = service
        super().__init__(
            f"unknown service {service!r}; known services: {', '.join(sorted(known)) or 'none'}"
        )


class InvalidEvent(OutboxError):
    """A payload or key that cannot be stored; nothing was written."""

    def __init__(self, event_type: str, service: str, problem: str) -> None:
        self.event_type, self.service, self.problem = event_type, service, problem
        super().__init__(f"event type {event_type!r} (service {service!r}): {problem}")


class DuplicateHandler(ConfigurationError):
    def __init__(self, event_type: str, existing: str) -> None:
        super().__init__(f"event type {event_type!r} already has a handler: {existing}")


class DatabaseRefused(OutboxError):
    """The database answered but refused us (credentials, unknown database): waiting will
    not help."""


class SchemaMismatch(OutboxError):
    """The database's tables differ from what the code expects (``outbox_app.schema_diff``)."""

    def __init__(self, where: str, differences: list[str]) -> None:
        listed = "; ".join(differences[:10])
        more = f"; and {len(differences) - 10} more" if len(differences) > 10 else ""
        super().__init__(
            f"the schema of {where} differs from the code: {listed}{more}. Run `outbox-app "
            "schema upgrade` (`--dry-run` prints its SQL), or `outbox-app schema check`"
        )
        self.differences = differences


class DatabaseUnavailable(OutboxError):
    """The database could not be reached or dropped the connection; safe to retry."""


class PermanentFailure(OutboxError):
    """Raise from a handler when retrying cannot help: the row goes dead at once,
    with this message as its reason."""


class HandlerMisuse(PermanentFailure):
    """A handler did what handlers must not (commit its session, return a coroutine):
    retrying the same code cannot help, so the row goes dead with this message."""


# What a handler raises that no retry of the same code can mend: the row goes dead at once.
# (An unknown event type or a bad payload from ctx.publish is refused the same way.)
PERMANENT_HANDLER_ERRORS: tuple[type[Exception], ...] = (
    PermanentFailure,
    UnknownEventType,
    InvalidEvent,
    WrongService,
    ConfigurationError,
)


def short_error(exc: BaseException) -> str:
    """``Type: message`` of an error (a driver's own message for a wrapped database error),
    at most 500 characters: for logs and ``last_error``."""
    orig = getattr(exc, "orig", None)
    return f"{type(exc).__name__}: {orig if orig is not None else exc}"[:500]
