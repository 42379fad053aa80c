"""Topics across a broker restart (found by the soak).

Tansu keeps topics in memory. After a restart it accepts records for a topic it no
longer knows from a producer with cached metadata; when the topic is then created, its
offsets restart at zero and every produce fails with ``UnknownError`` until they pass
the records already written. ``TopicGuard`` creates the topics before the relay
produces, so the first record after a restart lands in a proper topic.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from outbox_app.worker.topics import TopicGuard
from tests.support import Broker, running_broker

TOPIC = "outbox.guarded"


@pytest.fixture
def broker() -> Iterator[Broker]:
    with running_broker() as b:
        yield b


def restart(broker: Broker) -> None:
    broker.stop()
    broker.start()  # same port, nothing on it


async def produce(producer: AIOKafkaProducer, n: int) -> list[str]:
    """Send n records over the 4 partitions; the outcome of each. A batch that met the
    connection the restart broke is sent again: only the broker's answers count."""
    for _ in range(50):
        futures = [await producer.send(TOPIC, b"x", partition=i % 4) for i in range(n)]
        done = await asyncio.gather(*futures, return_exceptions=True)
        outcomes = ["ok" if not isinstance(r, BaseException) else type(r).__name__ for r in done]
        if "KafkaConnectionError" not in outcomes:
            return outcomes
        await asyncio.sleep(0.1)
    raise AssertionError("the producer never reconnected")


async def checked(guard: TopicGuard) -> None:
    """``guard.check()`` once the broker answers again (its old connection is gone)."""
    for _ in range(100):
        try:
            await guard.check()
            return
        except Exception:  # noqa: BLE001 - the restarted broker is not reachable yet
            guard.suspect()
            await asyncio.sleep(0.1)
    raise AssertionError("the guard never reached the broker")


def test_the_trap_a_topic_created_after_records_fails_its_produces(broker: Broker) -> None:
    async def run() -> list[str]:
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, request_timeout_ms=5000)
        await producer.start()
        try:
            admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
            await admin.start()
            await admin.create_topics([NewTopic(TOPIC, 4, 1)])
            await admin.close()
            assert set(await produce(producer, 8)) == {"ok"}
            broker.stop()
            # Let the producer see its connection drop while idle (as a relay between
            # rounds does): it then sends to the restarted broker on cached metadata.
            await asyncio.sleep(1.0)
            broker.start()
            assert set(await produce(producer, 8)) == {"ok"}  # accepted: no topic behind it
            admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
            await admin.start()
            await admin.create_topics([NewTopic(TOPIC, 4, 1)])  # as a metadata request would
            await admin.close()
            return await produce(producer, 8)
        finally:
            await producer.stop()

    assert "UnknownError" in asyncio.run(run())


def test_the_guard_recreates_lost_topics_before_anything_is_produced(broker: Broker) -> None:
    async def run() -> tuple[list[str], int]:
        guard = TopicGuard(broker.bootstrap, [TOPIC], partitions=4, interval=60.0)
        try:
            await guard.check()
            assert guard.created == 1
            restart(broker)
            await guard.check()  # within its interval: no broker round trip
            assert guard.created == 1
            guard.suspect()  # what a failed send does in the app
            await checked(guard)
            producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
            await producer.start()
            try:
                outcomes = await produce(producer, 8) + await produce(producer, 8)
                assert await producer.partitions_for(TOPIC) == {0, 1, 2, 3}
            finally:
                await producer.stop()
            return outcomes, guard.created
        finally:
            await guard.close()

    outcomes, created = asyncio.run(run())
    assert set(outcomes) == {"ok"}
    assert created == 2  # the lost topic was created again, before the first record


def test_the_guard_fails_while_the_broker_is_down_and_recovers(broker: Broker) -> None:
    async def run() -> int:
        guard = TopicGuard(broker.bootstrap, [TOPIC], partitions=4, request_timeout_ms=2000)
        try:
            await guard.check()
            broker.stop()
            guard.suspect()
            with pytest.raises(Exception):
                await asyncio.wait_for(guard.check(), 20)
            broker.start()
            await checked(guard)
            return guard.created
        finally:
            await guard.close()

    assert asyncio.run(run()) == 2
