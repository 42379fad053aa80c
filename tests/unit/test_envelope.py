from __future__ import annotations

import json
import re
from datetime import UTC, datetime

import pytest

from outbox_app.envelope import BadEnvelope, decode, encode
from outbox_app.records import OutboxRow, Status

TRACE = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def row(payload: str = '{"a":1}', key: str | None = "k-1") -> OutboxRow:
    now = datetime(2026, 11, 22, 8, 0, 0, 123456)
    return OutboxRow(
        id=42,
        event_type="chat_history.persist",
        service_name="agent",
        topic="outbox.agent",
        message_key=key,
        payload=payload,
        status=Status.PENDING,
        retry_count=2,
        max_retry=20,
        next_retry_at=now,
        last_error=None,
        traceparent=TRACE,
        published_at=None,
        consumed_at=None,
        created_at=now,
        updated_at=now,
    )


def test_encode_carries_identity_payload_and_cloudevents_headers():
    key, value, headers = encode(row())
    assert key == b"k-1"
    doc = json.loads(value)
    assert doc == {
        "v": 1,
        "outbox_id": 42,
        "event_type": "chat_history.persist",
        "service": "agent",
        "key": "k-1",
        "attempt": 3,
        "created_at": "2026-11-22T08:00:00.123456Z",
        "payload": {"a": 1},
    }
    h = dict(headers)
    assert h["ce_id"] == b"agent:42" and h["ce_type"] == b"chat_history.persist"
    assert h["ce_source"] == b"outbox/agent" and h["ce_specversion"] == b"1.0"
    assert h["ce_time"] == b"2026-11-22T08:00:00.123456Z"  # RFC 3339, the row's creation
    trace = h["traceparent"].decode()
    assert trace[3:35] == TRACE[3:35] and trace != TRACE  # same trace, new span
    assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-01", trace)


def test_the_cloudevents_sdk_reads_a_record_with_the_rows_time() -> None:
    from cloudevents.core.bindings.kafka import KafkaMessage, from_binary_event

    key, value, headers = encode(row())
    event = from_binary_event(KafkaMessage(headers=dict(headers), key=key, value=value))
    assert event.get_id() == "agent:42" and event.get_type() == "chat_history.persist"
    assert event.get_source() == "outbox/agent" and event.get_specversion() == "1.0"
    assert event.get_time() == datetime(2026, 11, 22, 8, 0, 0, 123456, tzinfo=UTC)
    assert event.get_datacontenttype() == "application/json"
    data = event.get_data()
    assert isinstance(data, dict) and data["outbox_id"] == 42 and data["payload"] == {"a": 1}
    assert event.get_extension("partitionkey") == "k-1"


def test_round_trip():
    env = decode(encode(row(key=None))[1], "agent")
    assert (env.outbox_id, env.event_type, env.key, env.attempt) == (
        42,
        "chat_history.persist",
        None,
        3,
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (None, "empty record"),
        (b"\xff\xfe", "not JSON"),
        (b"[]", "not a JSON object"),
        (b'{"v": 2}', "unsupported envelope version 2"),
        (b'{"v": 1, "outbox_id": true, "event_type": "x", "service": "agent"}', "'outbox_id'"),
        (b'{"v": 1, "outbox_id": 0, "event_type": "x", "service": "agent"}', "'outbox_id'"),
        (b'{"v": 1, "outbox_id": 3, "service": "agent"}', "'event_type' must be a string"),
        (b'{"v": 1, "outbox_id": 3, "event_type": "x", "service": "task"}', "service 'task'"),
    ],
)
def test_decode_names_what_is_wrong(value, message):
    with pytest.raises(BadEnvelope, match=message):
        decode(value, "agent")


def test_a_broken_stored_payload_still_identifies_its_row():
    env = decode(encode(row(payload="{oops"))[1], "agent")
    assert env.outbox_id == 42


@pytest.mark.parametrize(
    ("event_type", "key"),
    [
        ("chat_history.persist", "k-1"),
        ('odd."quoted"\\type', None),
        ("unicode.événement", "clé/日本語\u2028\x00\x1f"),
        ("t", ""),
    ],
)
def test_the_hand_built_head_is_byte_for_byte_what_json_dumps_gives(
    event_type: str, key: str | None
) -> None:
    r = row(key=key)
    r = OutboxRow(**{**r.__dict__, "event_type": event_type})
    _, value, _ = encode(r)
    expected_head = json.dumps(
        {
            "v": 1,
            "outbox_id": r.id,
            "event_type": event_type,
            "service": r.service_name,
            "key": key,
            "attempt": r.retry_count + 1,
            "created_at": "2026-11-22T08:00:00.123456Z",
        },
        separators=(",", ":"),
    )
    assert value == f'{expected_head[:-1]},"payload":{r.payload}}}'.encode()
    assert json.loads(value)["key"] == key and json.loads(value)["event_type"] == event_type
