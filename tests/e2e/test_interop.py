"""The records on the outbox topics, read by clients that are not this project: kcat
(librdkafka, the most common Kafka client library) and the CloudEvents SDK. Key, headers
and value must be what the README's "Records on the topics" section says."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest

from outbox_app.records import Status
from tests.e2e.helpers import Stack, publish_many, running_stack, wait_status
from tests.support import TEST_BROKER, TestBroker

pytestmark = [
    pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat is not installed"),
    # librdkafka 2.0 cannot talk to Tansu 0.6: "ApiVersionRequest failed: Read underflow"
    pytest.mark.skipif(TEST_BROKER != "kafka", reason="kcat needs a real Kafka broker"),
]

HEADERS = {"ce_specversion", "ce_id", "ce_type", "ce_source", "ce_time", "content-type"}


@pytest.fixture
def stack(tmp_path: Path, broker: TestBroker) -> Iterator[Stack]:
    with running_stack(tmp_path, broker, "outbox_interop") as s:
        yield s


def kcat_records(bootstrap: str, topic: str, count: int) -> list[dict[str, Any]]:
    run = subprocess.run(
        ["kcat", "-b", bootstrap, "-C", "-t", topic, "-o", "beginning", "-c", str(count), "-J"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    return [json.loads(line) for line in run.stdout.splitlines() if line.strip()]


def test_kcat_and_the_cloudevents_sdk_read_what_the_readme_documents(stack: Stack) -> None:
    from cloudevents.core.bindings.kafka import KafkaMessage, from_binary_event

    stack.worker("agent")
    payloads = [
        {"user_id": 7, "conversation_id": "c-42", "role": "user", "message": f"hi {i} ✓"}
        for i in range(3)
    ]
    ids = publish_many(stack.engine, [("chat_history.persist", p, "c-42") for p in payloads])
    for row_id in ids:
        wait_status(stack, "agent", row_id, Status.CONSUMED, 90)
    records = kcat_records(stack.broker.bootstrap, stack.topic("agent"), len(ids))
    assert [r["key"] for r in records] == ["c-42"] * 3
    assert len({r["partition"] for r in records}) == 1  # one key, one partition
    for record, row_id, payload in zip(records, ids, payloads, strict=True):
        headers = dict(zip(record["headers"][::2], record["headers"][1::2], strict=True))
        assert HEADERS | {"traceparent"} <= set(headers)
        assert headers["ce_id"] == f"agent:{row_id}"
        assert headers["ce_type"] == "chat_history.persist"
        assert headers["ce_source"] == "outbox/agent"
        value = json.loads(record["payload"])
        assert value["v"] == 1 and value["outbox_id"] == row_id and value["service"] == "agent"
        assert value["payload"] == payload and value["key"] == "c-42" and value["attempt"] == 1
        row = stack.store("agent").get(row_id)
        assert row is not None
        event = from_binary_event(
            KafkaMessage(
                headers={k: v.encode() for k, v in headers.items()},
                key=record["key"].encode(),
                value=record["payload"].encode(),
            )
        )
        assert event.get_time() == row.created_at.replace(tzinfo=UTC)  # not when it was read
        assert event.get_id() == f"agent:{row_id}"
