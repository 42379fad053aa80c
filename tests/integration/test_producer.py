"""The relay's batch producer against a real broker: partitions, order, headers, and
failures per batch."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from outbox_app.envelope import KafkaRecord
from outbox_app.worker.producer import BatchProducer
from tests.support import TestBroker

PARTITIONS = 4


@pytest.fixture
def topic(topic_prefix: str) -> str:
    return topic_prefix + "outbox.batched"


async def create_topic(bootstrap: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
    finally:
        await admin.close()


async def read_all(
    bootstrap: str, topic: str, n: int
) -> dict[int, list[tuple[bytes | None, bytes, dict[str, bytes]]]]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, fetch_max_wait_ms=50)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        out: dict[int, list[tuple[bytes | None, bytes, dict[str, bytes]]]] = {}
        got = 0
        async with asyncio.timeout(20):
            while got < n:
                for tp, records in (await consumer.getmany(timeout_ms=200)).items():
                    for r in records:
                        out.setdefault(tp.partition, []).append((r.key, r.value, dict(r.headers)))
                        got += 1
        return out
    finally:
        await consumer.stop()


def test_records_land_where_producer_send_puts_their_key_in_order(
    broker: TestBroker, topic: str
) -> None:
    async def scenario() -> None:
        await create_topic(broker.bootstrap, topic)
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, max_batch_size=16_384)
        await producer.start()
        try:
            publish = BatchProducer(lambda: producer)
            records: list[KafkaRecord] = [
                (f"k{i % 7}".encode(), f"v{i}".encode() * 40, [("ce_id", f"{i}".encode())])
                for i in range(600)  # several batches per partition at 16 KiB
            ]
            sent = await publish(topic, records)
            assert sorted(i for indices, _ in sent for i in indices) == list(range(600))
            assert len(sent) > PARTITIONS  # batches were cut when full
            await asyncio.gather(*(future for _, future in sent))
            expected = {
                key: (await producer.send_and_wait(topic, b"probe", key=key)).partition
                for key in {r[0] for r in records}
            }
        finally:
            await producer.stop()
        by_partition = await read_all(broker.bootstrap, topic, 600 + len(expected))
        seen: dict[bytes, list[int]] = {}
        for partition, rows in by_partition.items():
            for key, value, headers in rows:
                if value == b"probe":
                    continue
                assert key is not None and expected[key] == partition
                seen.setdefault(key, []).append(int(headers["ce_id"]))
        for key, order in seen.items():
            assert order == sorted(order), f"key {key!r} out of order"
        assert sum(len(v) for v in seen.values()) == 600

    asyncio.run(scenario())


def test_a_record_larger_than_a_batch_goes_alone_and_a_dead_broker_fails_the_round(
    broker: TestBroker, topic: str
) -> None:
    async def scenario() -> None:
        await create_topic(broker.bootstrap, topic)
        producer = AIOKafkaProducer(
            bootstrap_servers=broker.bootstrap, max_batch_size=1024, max_request_size=10_000_000
        )
        await producer.start()
        suspected: list[bool] = []
        try:
            publish = BatchProducer(lambda: producer, on_failure=lambda: suspected.append(True))
            records: list[KafkaRecord] = [
                (b"a", b"small", []),
                (b"a", b"x" * 5000, []),
                (b"a", b"tail", []),
            ]
            sent = await publish(topic, records)
            outcomes = {}
            for indices, future in sent:
                try:
                    await future
                    outcomes.update(dict.fromkeys(indices, "ok"))
                except Exception as exc:  # noqa: BLE001
                    outcomes.update(dict.fromkeys(indices, str(exc)))
            assert outcomes == {0: "ok", 1: "ok", 2: "ok"}
            assert [indices for indices, _ in sent] == [[0], [1], [2]]  # in order, one each

            def unavailable() -> AIOKafkaProducer:
                raise ConnectionError("producer not started")

            (only,) = await BatchProducer(unavailable, on_failure=lambda: suspected.append(True))(
                topic, records
            )
            assert only[0] == [0, 1, 2] and isinstance(only[1].exception(), ConnectionError)
            assert suspected == [True]
        finally:
            await producer.stop()

    asyncio.run(scenario())
