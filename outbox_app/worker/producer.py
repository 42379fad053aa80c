"""Hands a relay round to the Kafka producer as one record batch per partition.

``producer.send()`` per record costs a partitioner call, a log call, an accumulator
lookup and a future each; a round of 500 rows spent more time there than in its
database work. Here the round's records are grouped by partition (the same murmur2
hash as the producer's default partitioner, so a key keeps its partition), appended
to batches and submitted with ``send_batch``: one ack future per batch. Batches of a
partition are submitted in claim order, so a key's rows keep their order.
"""

from __future__ import annotations

import asyncio
import functools
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiokafka.partitioner import murmur2

from outbox_app.envelope import KafkaRecord
from outbox_app.worker.compat.producer import available_partitions

# (indices of the records in one batch, its ack future); a batch that could not be
# handed to the producer comes back with the exception set on its future.
Sent = list[tuple[list[int], "asyncio.Future[Any]"]]
PublishFunc = Callable[[str, list[KafkaRecord]], Awaitable[Sent]]


@functools.lru_cache(maxsize=65_536)
def _key_hash(key: bytes) -> int:
    # Keys repeat (a conversation, an account): the pure-Python murmur2 runs once each.
    return int(murmur2(key)) & 0x7FFFFFFF


def partition_for(key: bytes | None, partitions: Sequence[int], available: Sequence[int]) -> int:
    """aiokafka's (and the Java client's) default partitioner."""
    if key is None:
        return random.choice(available or partitions)
    return partitions[_key_hash(key) % len(partitions)]


class RecordRefused(Exception):
    """The producer will not take this record, whatever the broker's state."""


def failed(exc: BaseException) -> asyncio.Future[Any]:
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    future.set_exception(exc)
    future.exception()  # retrieved here: the relay reads it, nothing logs it as unhandled
    return future


class BatchProducer:
    """``publish(topic, records)`` for the relay, on an aiokafka producer."""

    def __init__(
        self,
        producer: Callable[[], Any],
        before_send: Callable[[], Awaitable[None]] | None = None,
        on_failure: Callable[[], None] | None = None,
    ) -> None:
        self._producer = producer  # the started AIOKafkaProducer, looked up per round
        self._before_send = before_send
        self._on_failure = on_failure or (lambda: None)

    async def __call__(self, topic: str, records: list[KafkaRecord]) -> Sent:
        try:
            if self._before_send is not None:
                await self._before_send()
            producer = self._producer()
            partitions = sorted(await producer.partitions_for(topic))
            available = available_partitions(producer, topic)
        except Exception as exc:  # noqa: BLE001 - the whole round fails as one attempt
            self._on_failure()
            return [(list(range(len(records))), failed(exc))]
        by_partition: dict[int, list[int]] = {}
        for i, (key, _, _) in enumerate(records):
            by_partition.setdefault(partition_for(key, partitions, available), []).append(i)
        sent: Sent = []
        unsent: list[int] = []
        failure: BaseException | None = None
        for partition, indices in by_partition.items():
            if failure is None:
                try:
                    await self._send_partition(producer, topic, partition, records, indices, sent)
                    continue
                except Exception as exc:  # noqa: BLE001 - broker gone: fail the rest at once
                    failure = exc
                    self._on_failure()
                    done = {i for batch, _ in sent for i in batch}
                    indices = [i for i in indices if i not in done]
            unsent.extend(indices)
        if failure is not None and unsent:
            sent.append((unsent, failed(failure)))
        return sent

    async def _send_partition(
        self,
        producer: Any,
        topic: str,
        partition: int,
        records: list[KafkaRecord],
        indices: list[int],
        sent: Sent,
    ) -> None:
        batch: Any = producer.create_batch()
        members: list[int] = []
        for i in indices:
            if not _append(batch, records[i]):  # full: hand it over, start the next one
                if members:
                    future = await producer.send_batch(batch, topic, partition=partition)
                    sent.append((members, self._watch(future)))
                batch, members = producer.create_batch(), []
                if not _append(batch, records[i]):  # an empty batch takes any one record
                    refused = RecordRefused(
                        f"the producer refused record {i} ({len(records[i][1])} bytes) even in "
                        "an empty batch"
                    )
                    sent.append(([i], failed(refused)))
                    continue
            members.append(i)
        if members:
            future = await producer.send_batch(batch, topic, partition=partition)
            sent.append((members, self._watch(future)))

    def _watch(self, future: asyncio.Future[Any]) -> asyncio.Future[Any]:
        def done(f: asyncio.Future[Any]) -> None:
            if f.cancelled() or f.exception() is not None:
                self._on_failure()

        future.add_done_callback(done)
        return future


def _append(batch: Any, record: KafkaRecord) -> bool:
    key, value, headers = record
    return batch.append(timestamp=None, key=key, value=value, headers=headers) is not None
