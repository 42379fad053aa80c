"""The service topics: created or checked at start-up, and created again when they
disappear (an operator deleted one; a broker restarted without them).

The first tests run on the suite's broker. The last ones are about Tansu, which keeps
topics in memory: after a restart it accepts records for a topic it no longer knows from
a producer with cached metadata; when the topic is then created, its offsets restart at
zero and every produce fails with ``UnknownError`` until they pass the records already
written (found by the soak). ``TopicGuard`` creates the topics before the relay produces,
so the first record after a restart lands in a proper topic.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from outbox_app.worker.kafka import KafkaAccess
from outbox_app.worker.topics import (
    TopicAdmin,
    TopicCreationRefused,
    TopicGuard,
    TopicPlan,
    topic_partitions,
)
from tests.support import TEST_BROKER, TansuBroker, TestBroker, tansu_broker

TOPIC = "outbox.guarded"


def access(broker: TestBroker) -> KafkaAccess:
    host, port = broker.bootstrap.split(",")[0].rsplit(":", 1)
    return KafkaAccess(((host, int(port)),))


def guard_for(broker: TestBroker, topics: list[str], interval: float = 0.0) -> TopicGuard:
    admin = TopicAdmin(access(broker), request_timeout_ms=2000)
    return TopicGuard(admin, TopicPlan(topics, partitions=4, replication=1), interval)


async def partitions_of(bootstrap: str, topic: str) -> int | None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return (await topic_partitions(admin, [topic]))[topic]
    finally:
        await admin.close()


# -- the suite's broker (Apache Kafka by default) --------------------------------------------
def test_start_up_creates_missing_topics_and_keeps_existing_ones_with_a_warning(
    broker: TestBroker, topic_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    fresh, narrow = topic_prefix + "outbox.fresh", topic_prefix + "outbox.narrow"

    async def run() -> TopicPlan:
        admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
        await admin.start()
        await admin.create_topics([NewTopic(narrow, 2, 1)])
        await admin.close()
        plan = TopicPlan([fresh, narrow], partitions=4)  # replication: auto
        topics = TopicAdmin(access(broker))
        try:
            await plan.ensure(topics)
            await plan.ensure(topics)  # again, as a second worker would: nothing to do
        finally:
            await topics.close()
        return plan

    with caplog.at_level("WARNING", logger="outbox_app.worker.topics"):
        plan = asyncio.run(run())
    assert plan.created == 1 and plan.replication == 1  # one broker: auto is 1
    assert asyncio.run(partitions_of(broker.bootstrap, fresh)) == 4
    assert asyncio.run(partitions_of(broker.bootstrap, narrow)) == 2  # left as it was
    warned = [r.getMessage() for r in caplog.records]
    assert any(f"topic {narrow} has 2 partition(s)" in m for m in warned), warned


@pytest.mark.skipif(TEST_BROKER != "kafka", reason="Tansu accepts any replication factor")
def test_a_replication_factor_the_cluster_cannot_have_is_refused_by_name(
    broker: TestBroker, topic_prefix: str
) -> None:
    async def run() -> None:
        topics = TopicAdmin(access(broker))
        try:
            await TopicPlan([topic_prefix + "outbox.wide"], 4, replication=3).ensure(topics)
        finally:
            await topics.close()

    with pytest.raises(TopicCreationRefused, match=r"outbox\.wide could not be created.*factor 3"):
        asyncio.run(run())


def test_a_topic_deleted_under_a_running_worker_is_created_again_after_a_failed_send(
    broker: TestBroker, topic_prefix: str
) -> None:
    topic = topic_prefix + TOPIC

    async def run() -> int:
        guard = guard_for(broker, [topic])
        try:
            guard.suspect()
            await guard.check()
            admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
            await admin.start()
            await admin.delete_topics([topic])
            await admin.close()
            await guard.check()  # no failed send yet: no check, no broker round trip
            assert guard.created == 1
            guard.suspect()  # what a failed send does
            deadline = time.monotonic() + 60  # deletion completes asynchronously on the broker
            while guard.created < 2 and time.monotonic() < deadline:
                with contextlib.suppress(Exception):  # "marked for deletion" for a moment
                    await guard.check()
                guard.suspect()
                await asyncio.sleep(0.1)
            return guard.created
        finally:
            await guard.close()

    assert asyncio.run(run()) == 2
    assert asyncio.run(partitions_of(broker.bootstrap, topic)) == 4


# -- Tansu, which forgets topics when it restarts ----------------------------------------------
@pytest.fixture
def tansu() -> Iterator[TansuBroker]:
    with tansu_broker() as b:
        yield b


def restart(broker: TansuBroker) -> None:
    broker.down()
    broker.up()  # same port, nothing on it


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


def test_the_trap_a_topic_created_after_records_fails_its_produces(tansu: TansuBroker) -> None:
    broker = tansu

    async def run() -> list[str]:
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, request_timeout_ms=5000)
        await producer.start()
        try:
            admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
            await admin.start()
            await admin.create_topics([NewTopic(TOPIC, 4, 1)])
            await admin.close()
            assert set(await produce(producer, 8)) == {"ok"}
            broker.down()
            # Let the producer see its connection drop while idle (as a relay between
            # rounds does): it then sends to the restarted broker on cached metadata.
            await asyncio.sleep(1.0)
            broker.up()
            assert set(await produce(producer, 8)) == {"ok"}  # accepted: no topic behind it
            admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
            await admin.start()
            await admin.create_topics([NewTopic(TOPIC, 4, 1)])  # as a metadata request would
            await admin.close()
            return await produce(producer, 8)
        finally:
            await producer.stop()

    assert "UnknownError" in asyncio.run(run())


def test_the_guard_recreates_lost_topics_before_anything_is_produced(tansu: TansuBroker) -> None:
    broker = tansu

    async def run() -> tuple[list[str], int]:
        guard = guard_for(broker, [TOPIC], interval=60.0)
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


def test_the_guard_fails_while_the_broker_is_down_and_recovers(tansu: TansuBroker) -> None:
    broker = tansu

    async def run() -> int:
        guard = guard_for(broker, [TOPIC], interval=60.0)
        try:
            await guard.check()
            broker.down()
            guard.suspect()
            with pytest.raises(Exception):
                await asyncio.wait_for(guard.check(), 20)
            broker.up()
            await checked(guard)
            return guard.created
        finally:
            await guard.close()

    assert asyncio.run(run()) == 2
