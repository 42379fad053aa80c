"""Typed payloads, validated by pydantic: a handler may declare a dataclass or a pydantic
model (or any type pydantic validates: ``list[int]``, a ``TypedDict``...). What is
published is validated and stored as that type's JSON; what is consumed is validated
from the stored JSON straight into the type. Nested types, lists, optionals, enums and
datetimes are checked; an error names the field's path (``field 'items[2].sku'``).

Both sides validate the same thing, the payload's JSON, with the same rules: pydantic's
(lax) by default, which also takes ``"7"`` for an int; unknown fields are ignored, so a
publisher may add a field before every consumer knows it (forward compatible).
``strict=True`` on a handler uses pydantic's strict mode and refuses unknown fields.
Untyped handlers get the decoded JSON (a dict, usually)."""

from __future__ import annotations

import dataclasses
import functools
import json
from typing import Any

from pydantic import TypeAdapter, ValidationError


def _plain_json(payload: Any) -> str:
    if dataclasses.is_dataclass(payload) and not isinstance(payload, type):
        payload = dataclasses.asdict(payload)
    try:
        return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"payload is not JSON-serialisable: {exc}") from None


@functools.cache
def adapter(payload_type: Any) -> TypeAdapter[Any]:
    return TypeAdapter(payload_type)


def to_json(payload: Any, payload_type: Any = None, *, strict: bool = False) -> str:
    """The JSON stored for ``payload``: validated as ``payload_type`` (a dict or an
    instance of it) and dumped by the same adapter, or compact JSON when untyped.
    Raises ``ValueError`` naming the offending field."""
    if payload_type is None:
        return _plain_json(payload)
    ta = adapter(payload_type)
    raw = _instance_json(ta, payload_type, payload)
    return ta.dump_json(coerce(payload_type, raw, strict=strict), by_alias=True).decode()


def coerce(payload_type: Any, raw: str | bytes, *, strict: bool = False) -> Any:
    """The stored payload as ``payload_type`` (validated), or its decoded JSON when
    untyped. Raises ``ValueError`` naming the offending field."""
    if payload_type is None:
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise ValueError(f"payload is not JSON: {exc}") from None
    ta = adapter(payload_type)
    try:
        value = ta.validate_json(raw, strict=strict)
    except ValidationError as exc:
        raise ValueError(describe(exc)) from None
    if strict:
        _refuse_unknown(json.loads(raw), ta.dump_python(value, mode="json", by_alias=True))
    return value


def _instance_json(ta: TypeAdapter[Any], payload_type: Any, payload: Any) -> str:
    """JSON of what a publisher passed: an instance of the type (dumped by it), or plain
    data (a dict, a list)."""
    if isinstance(payload_type, type) and isinstance(payload, payload_type):
        return ta.dump_json(payload, by_alias=True).decode()
    return _plain_json(payload)


def describe(exc: ValidationError) -> str:
    """pydantic's errors as one line, each naming its field's path."""
    parts = []
    for err in exc.errors(include_url=False)[:5]:
        path = field_path(err.get("loc", ()))
        where = f"field {path!r}" if path else "payload"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    more = exc.error_count() - len(parts)
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def field_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _refuse_unknown(given: Any, known: Any, path: tuple[Any, ...] = ()) -> None:
    """Raise for a key of ``given`` that the validated value has no field for."""
    if isinstance(given, dict) and isinstance(known, dict):
        for key, value in given.items():
            if key not in known:
                raise ValueError(f"field {field_path((*path, key))!r}: unknown field (strict)")
            _refuse_unknown(value, known[key], (*path, key))
    elif isinstance(given, list) and isinstance(known, list):
        for i, (g, k) in enumerate(zip(given, known, strict=False)):
            _refuse_unknown(g, k, (*path, i))
