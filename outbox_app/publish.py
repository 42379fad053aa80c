"""``publish()`` and ``apublish()``: add an event to the caller's own transaction."""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Insert
from sqlalchemy.orm import Session

from outbox_app.context import HandlerSession
from outbox_app.errors import ConfigurationError, InvalidEvent, WrongService
from outbox_app.payloads import to_json
from outbox_app.registry import Registry, default_registry
from outbox_app.schema import MAX_KEY_CHARS, outbox_table
from outbox_app.statements import hot_statements
from outbox_app.store import inserted_id, row_params
from outbox_app.tracing import current_traceparent

if TYPE_CHECKING:  # the asyncio extension needs greenlet: only async callers have it
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

log = logging.getLogger(__name__)

DEFAULT_MAX_RETRY = 20
_max_retry_cache: dict[str, int] = {}


def default_max_retry() -> int:
    """``OUTBOX_MAX_RETRY`` of the publishing process (20 when unset): the attempts an
    event gets unless ``publish(..., max_retry=N)`` says otherwise."""
    raw = os.environ.get("OUTBOX_MAX_RETRY", "").strip()
    if not raw:
        return DEFAULT_MAX_RETRY
    value = _max_retry_cache.get(raw)
    if value is None:
        try:
            value = int(raw)
        except ValueError:
            raise ConfigurationError(f"OUTBOX_MAX_RETRY must be an integer, got {raw!r}") from None
        if value < 1:
            raise ConfigurationError(f"OUTBOX_MAX_RETRY must be at least 1, got {value}")
        _max_retry_cache[raw] = value
    return value


def publish(
    session: Session | Connection,
    event_type: str,
    payload: Any,
    key: str | None = None,
    *,
    max_retry: int | None = None,
    registry: Registry | None = None,
    service: str | None = None,
    traceparent: str | None = None,
) -> int:
    """Add an outbox row for ``event_type`` to the transaction of ``session`` (an ORM
    ``Session`` or a Core ``Connection``); return its id.

    Never commits: the row becomes visible to the relay when the caller commits, and
    disappears with a rollback. Raises ``UnknownEventType`` or ``InvalidEvent`` (and
    writes nothing) for an unregistered event type, a payload that does not validate
    or is not JSON-serialisable, or an oversize key. ``service``, when given, is the
    service the caller expects to publish through (``WrongService`` otherwise).
    """
    insert, params = new_row(event_type, payload, key, max_retry, registry, service, traceparent)
    outbox_id = inserted_id(session.execute(insert, params))
    if isinstance(session, HandlerSession):  # a handler's follow-up event: wake its relay
        session.published_to.add((registry or default_registry).owner(event_type))
    return outbox_id


async def apublish(
    session: AsyncSession | AsyncConnection,
    event_type: str,
    payload: Any,
    key: str | None = None,
    *,
    max_retry: int | None = None,
    registry: Registry | None = None,
    service: str | None = None,
    traceparent: str | None = None,
) -> int:
    """``publish()`` for asyncio code: joins the transaction of an ``AsyncSession`` or an
    ``AsyncConnection`` (SQLAlchemy's asyncio extension), with the same checks and errors;
    never commits."""
    insert, params = new_row(event_type, payload, key, max_retry, registry, service, traceparent)
    return inserted_id(await session.execute(insert, params))


def new_row(
    event_type: str,
    payload: Any,
    key: str | None,
    max_retry: int | None,
    registry: Registry | None,
    service: str | None,
    traceparent: str | None,
) -> tuple[Insert, dict[str, Any]]:
    """The insert of a new pending row and its parameters, once every check passed."""
    reg = registry or default_registry
    route = reg.route_for_event(event_type)
    if service is not None and service != route.service:
        raise WrongService(event_type, route.service, service)
    payload_json = validate_event(reg, event_type, route.service, payload, key)
    retries = default_max_retry() if max_retry is None else max_retry
    if retries < 1:
        raise InvalidEvent(event_type, route.service, f"max_retry must be >= 1, got {retries}")
    params = row_params(
        route, event_type, payload_json, key, retries, traceparent or current_traceparent()
    )
    return hot_statements(outbox_table(route)).add, params


def validate_event(
    reg: Registry, event_type: str, service: str, payload: Any, key: str | None
) -> str:
    """The payload as JSON, once it passed every check; raises ``InvalidEvent``."""
    if key is not None:
        if not isinstance(key, str):
            raise InvalidEvent(event_type, service, f"key must be a string, got {type(key)}")
        if len(key) > MAX_KEY_CHARS:
            raise InvalidEvent(
                event_type, service, f"key is {len(key)} characters, at most {MAX_KEY_CHARS}"
            )
    try:
        # Validated, and stored as the JSON the payload type makes of it.
        payload_json = to_json(payload, reg.payload_type(event_type), strict=reg.strict(event_type))
    except ValueError as exc:
        raise InvalidEvent(event_type, service, str(exc)) from None
    return payload_json
