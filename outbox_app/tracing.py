"""W3C trace context carried from ``publish()`` to the handler through the outbox row."""

from __future__ import annotations

import contextvars
import random
import re
import secrets

_current: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "outbox_traceparent", default=None
)
_VALID = re.compile(r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")


def new_traceparent() -> str:
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"


def current_traceparent() -> str:
    """The caller's trace (``use_traceparent``) or a fresh one, so every event has one."""
    value = _current.get()
    return value if value and _VALID.match(value) else new_traceparent()


def child_of(traceparent: str | None) -> str:
    """Same trace, new span: what the relay puts on the Kafka record. Span ids need to
    be unique, not secret: the fast non-cryptographic generator is enough."""
    if traceparent and len(traceparent) == 55:
        return f"{traceparent[:36]}{random.getrandbits(64) or 1:016x}{traceparent[52:]}"
    return new_traceparent()


def use_traceparent(value: str | None) -> contextvars.Token[str | None]:
    """Make ``value`` the trace of events published from this context."""
    return _current.set(value)
