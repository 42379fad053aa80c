"""Typed payloads: a dataclass declared on a handler validates what is published and
what is consumed, and the error names the field that was wrong."""

from __future__ import annotations

import dataclasses
import functools
import json
import types
import typing
from typing import Any, Union, get_args, get_origin


def to_json(payload: Any) -> str:
    """Serialise a payload (a dict, list, or dataclass instance) to compact JSON."""
    if dataclasses.is_dataclass(payload) and not isinstance(payload, type):
        payload = dataclasses.asdict(payload)
    try:
        return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"payload is not JSON-serialisable: {exc}") from None


def coerce(payload_type: type | None, data: Any) -> Any:
    """Build ``payload_type`` from decoded JSON, or return ``data`` when untyped.

    Raises ``ValueError`` naming the offending field.
    """
    if payload_type is None:
        return data
    if not dataclasses.is_dataclass(payload_type):
        if not isinstance(data, payload_type):
            raise ValueError(f"payload must be {payload_type.__name__}, got {_kind(data)}")
        return data
    if not isinstance(data, dict):
        raise ValueError(f"payload must be a JSON object, got {_kind(data)}")
    hints, known = _fields(payload_type)
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ValueError(f"unknown field(s) {', '.join(map(repr, unknown))}")
    for name, f in known.items():
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if name not in data:
            if required:
                raise ValueError(f"missing field {name!r}")
            continue
        if not _matches(hints.get(name, Any), data[name]):
            raise ValueError(
                f"field {name!r} must be {_type_name(hints.get(name, Any))}, "
                f"got {_kind(data[name])}"
            )
    return payload_type(**data)


@functools.cache
def _fields(payload_type: type) -> tuple[dict[str, Any], dict[str, dataclasses.Field[Any]]]:
    # get_type_hints resolves string annotations: costly, so once per type.
    known = {f.name: f for f in dataclasses.fields(payload_type) if f.init}
    return typing.get_type_hints(payload_type), known


def _matches(hint: Any, value: Any) -> bool:
    if hint is Any:
        return True
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        return any(_matches(arg, value) for arg in get_args(hint))
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is not None:
        hint = origin
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _kind(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean"}.get(
        type(value), "null" if value is None else type(value).__name__
    )
