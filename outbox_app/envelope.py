"""The versioned JSON record that travels on Kafka, and its CloudEvents headers.

The row in the database stays the source of truth: a consumer uses the envelope
to find the row (service and outbox id) and runs the handler on the row itself.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from outbox_app.records import Delivery, OutboxRow
from outbox_app.tracing import child_of

VERSION = 1

# key, value, headers of one Kafka record
KafkaRecord = tuple[bytes | None, bytes, list[tuple[str, bytes]]]


class BadEnvelope(ValueError):
    """A record on a service topic that is not an outbox envelope."""


@dataclass(frozen=True)
class Envelope:
    outbox_id: int
    event_type: str
    service: str
    key: str | None
    attempt: int


def encode(row: Delivery | OutboxRow) -> KafkaRecord:
    """(key, value, headers) of the Kafka record for ``row``."""
    # The head by hand, byte for byte what json.dumps(dict, separators=(",", ":")) gives
    # (tests/unit/test_envelope.py checks it): a dict through the JSON encoder cost a
    # tenth of the relay's CPU. Strings go through json's own escaping.
    key_json = "null" if row.message_key is None else _string(row.message_key)
    created_at = rfc3339(row.created_at) if row.created_at else None
    created = "null" if created_at is None else f'"{created_at}"'
    head = (
        f'{{"v":{VERSION},"outbox_id":{int(row.id)},"event_type":{_string(row.event_type)},'
        f'"service":{_string(row.service_name)},"key":{key_json},'
        f'"attempt":{int(row.retry_count) + 1},"created_at":{created}}}'
    )
    # The stored payload is already JSON: splice it in rather than re-encode it.
    value = f'{head[:-1]},"payload":{row.payload}}}'.encode()
    headers = [
        ("ce_specversion", b"1.0"),
        ("ce_id", f"{row.service_name}:{row.id}".encode()),
        ("ce_type", row.event_type.encode()),
        ("ce_source", f"outbox/{row.service_name}".encode()),
        ("ce_time", (created_at or "").encode()),  # when the business transaction wrote it
        ("content-type", b"application/json"),
        ("traceparent", child_of(row.traceparent).encode()),
    ]
    key = row.message_key.encode() if row.message_key is not None else None
    return key, value, headers


_string = json.encoder.encode_basestring_ascii  # what json.dumps uses for a str


def rfc3339(naive_utc: datetime) -> str:
    """RFC 3339 in UTC, microseconds always shown: ``2026-12-01T20:18:50.522000Z``."""
    return naive_utc.isoformat(timespec="microseconds") + "Z"


_PAYLOAD_MARK = b',"payload":'


def _head_only(value: bytes | str) -> Any:
    """The envelope fields without the spliced payload, which the consumer does not need
    (and which may be broken in a row written around ``publish()``: that row then goes
    dead instead of its record being dropped). Inside JSON strings quotes are escaped,
    so the first mark is ours; None when there is no mark or the head is not JSON."""
    raw = value.encode() if isinstance(value, str) else value
    cut = raw.find(_PAYLOAD_MARK)
    if cut < 0:
        return None
    try:
        return json.loads((raw[:cut] + b"}").decode())
    except (ValueError, UnicodeDecodeError):
        return None


def decode(value: bytes | str | None, service: str) -> Envelope:
    """Parse and check one record of ``service``'s topic; raises ``BadEnvelope``."""
    if value is None:
        raise BadEnvelope("empty record")
    # The consumer runs the handler on the stored row, so the payload need not be parsed.
    data: Any = _head_only(value)
    if data is None:
        try:
            data = json.loads(value)
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadEnvelope(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadEnvelope("not a JSON object")
    if data.get("v") != VERSION:
        raise BadEnvelope(f"unsupported envelope version {data.get('v')!r}")
    outbox_id, event_type = data.get("outbox_id"), data.get("event_type")
    if not isinstance(outbox_id, int) or isinstance(outbox_id, bool) or outbox_id < 1:
        raise BadEnvelope(f"field 'outbox_id' must be a positive integer, got {outbox_id!r}")
    if not isinstance(event_type, str) or not event_type:
        raise BadEnvelope(f"field 'event_type' must be a string (outbox id {outbox_id})")
    if data.get("service") != service:
        raise BadEnvelope(
            f"outbox id {outbox_id}: envelope is for service {data.get('service')!r}, "
            f"but arrived on the topic of service {service!r}"
        )
    key = data.get("key")
    attempt = data.get("attempt", 1)
    return Envelope(
        outbox_id,
        event_type,
        service,
        key if isinstance(key, str) else None,
        attempt if isinstance(attempt, int) else 1,
    )
