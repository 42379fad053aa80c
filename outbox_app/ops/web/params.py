"""Request inputs of the outbox endpoints, checked before any work: a bad one is an
``ApiError`` (400) whose message names the parameter and what it accepts."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from outbox_app.ops.operations import MAX_IDS, MAX_OFFSET, MAX_PAGE
from outbox_app.ops.signatures import MAX_SIGNATURE_CHARS

MAX_ID = 2**63 - 1  # BIGINT


class ApiError(Exception):
    """An answer other than 200, with a message safe to show to the caller."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def bad(message: str) -> ApiError:
    return ApiError(400, message)


def query_str(query: Mapping[str, str], name: str) -> str | None:
    value = query.get(name, "").strip()
    return value or None


def query_int(query: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = query_str(query, name)
    if raw is None:
        return default
    return bounded_int(raw, name, low, high)


def query_float(query: Mapping[str, str], name: str, default: float) -> float:
    raw = query_str(query, name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise bad(f"{name} must be a number, got {raw!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise bad(f"{name} must be a finite number, got {raw!r}")
    return value


def bounded_int(raw: str, name: str, low: int, high: int) -> int:
    # int() would also take " 7", "+7" and "7_000": ask for plain digits.
    if not raw.isascii() or not raw.isdigit():
        raise bad(f"{name} must be an integer between {low} and {high}, got {raw!r}")
    value = int(raw)
    if not low <= value <= high:
        raise bad(f"{name} must be between {low} and {high}, got {value}")
    return value


def page(query: Mapping[str, str]) -> tuple[int, int]:
    return (
        query_int(query, "limit", 50, 1, MAX_PAGE),
        query_int(query, "offset", 0, 0, MAX_OFFSET),
    )


def outbox_id(raw: str) -> int:
    return bounded_int(raw, "id", 1, MAX_ID)


@dataclass(frozen=True)
class RequeueRequest:
    """What ``POST /outbox/dead/requeue/`` asks for: ids, an event type, a failure
    signature (one group of ``/outbox/dead/groups/``), or all."""

    service: str | None
    ids: list[int] | None
    event_type: str | None
    signature: str | None = None


SELECTORS = ("id", "ids", "all", "event_type", "signature")


def requeue_request(body: bytes) -> RequeueRequest:
    try:
        doc = json.loads(body or b"null")
    except (ValueError, RecursionError):  # not JSON, or nested deeper than Python recurses
        doc = None
    if not isinstance(doc, dict):
        raise bad(
            'the body must be a JSON object such as {"service": "agent", "ids": [1, 2]}, '
            '{"service": "agent", "all": true} or {"event_type": "chat_history.persist"}'
        )
    unknown = sorted(set(doc) - {"service", *SELECTORS})
    if unknown:
        accepted = ", ".join(("service", *SELECTORS))
        raise bad(f"unknown field(s) {', '.join(unknown)}; accepted: {accepted}")
    # ``is``, not ``in (None, False)``: 0 == False, and id 0 must reach its own check.
    given = [k for k in SELECTORS if doc.get(k) is not None and doc.get(k) is not False]
    if len(given) != 1:
        raise bad(f"give exactly one of {', '.join(SELECTORS)} (got {', '.join(given) or 'none'})")
    service = _optional_str(doc, "service")
    event_type = _optional_str(doc, "event_type")
    signature = _optional_str(doc, "signature")
    if service is None and event_type is None:
        raise bad("service is required (it may be left out only with event_type)")
    if signature is not None and len(signature) > MAX_SIGNATURE_CHARS:
        raise bad(f"signature must be at most {MAX_SIGNATURE_CHARS} characters")
    ids: list[int] | None = None
    if "id" in given:
        ids = [_json_id(doc["id"])]
    elif "ids" in given:
        ids = _json_ids(doc["ids"])
    elif "all" in given and doc["all"] is not True:
        raise bad(f"all must be true, got {doc['all']!r}")
    return RequeueRequest(service, ids, event_type, signature)


def _optional_str(doc: Mapping[str, Any], name: str) -> str | None:
    value = doc.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise bad(f"{name} must be a non-empty string, got {value!r}")
    return value.strip()


def _json_id(value: Any) -> int:
    # JSON true is an int in Python; "12" is a string: neither is an id.
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_ID:
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:40] + "…"
        raise bad(f"ids must be integers between 1 and {MAX_ID}, got {shown}")
    return value


def _json_ids(value: Any) -> list[int]:
    if not isinstance(value, list) or not value:
        raise bad(f"ids must be a non-empty list of integers, got {value!r}")
    if len(value) > MAX_IDS:
        raise bad(f"at most {MAX_IDS} ids per request, got {len(value)}")
    return sorted({_json_id(v) for v in value})


def skip_request(body: bytes) -> tuple[str, list[int]]:
    """What ``POST /outbox/dead/skip/`` asks for: a service and the dead rows to skip."""
    try:
        doc = json.loads(body or b"null")
    except (ValueError, RecursionError):
        doc = None
    if not isinstance(doc, dict):
        raise bad('the body must be a JSON object such as {"service": "task", "ids": [1, 2]}')
    unknown = sorted(set(doc) - {"service", "id", "ids"})
    if unknown:
        raise bad(f"unknown field(s) {', '.join(unknown)}; accepted: service, id, ids")
    service = _optional_str(doc, "service")
    if service is None:
        raise bad("service is required")
    if ("id" in doc) == ("ids" in doc):
        raise bad("give exactly one of id, ids")
    ids = [_json_id(doc["id"])] if "id" in doc else _json_ids(doc["ids"])
    return service, ids
