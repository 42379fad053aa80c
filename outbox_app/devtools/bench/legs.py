"""Where a live event's milliseconds go, seen from outside the workers: a plain aiokafka
consumer (no group) reads the service topic during the live phase and notes, per outbox
id, the record's timestamp (set by the relay's producer when it sent it) and when this
consumer received it. With the business commit and ``consumed_at`` that splits the
latency into the relay's leg (commit to send), the broker's (send to a plain consumer)
and the worker's consume leg (send to the handler's commit)."""

from __future__ import annotations

import asyncio
import json
import statistics
import threading
import time
from dataclasses import dataclass, field


@dataclass
class Legs:
    relay_ms: list[float] = field(default_factory=list)  # commit -> record sent
    broker_ms: list[float] = field(default_factory=list)  # sent -> a plain consumer has it
    consume_ms: list[float] = field(default_factory=list)  # sent -> handler committed

    def medians(self) -> dict[str, float]:
        out = {}
        for name in ("relay_ms", "broker_ms", "consume_ms"):
            values = getattr(self, name)
            if values:
                out[f"leg_{name.removesuffix('_ms')}_p50_ms"] = round(statistics.median(values), 1)
        return out


class LegProbe:
    """Reads ``topic`` from its end while running; ``seen[outbox_id] = (sent, received)``
    in epoch seconds."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap, self.topic = bootstrap, topic
        self.seen: dict[int, tuple[float, float]] = {}
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def __enter__(self) -> LegProbe:
        self._thread.start()
        self._ready.wait(30)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    async def _run(self) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            (described,) = await admin.describe_topics([self.topic])
        finally:
            await admin.close()
        parts = [p["partition"] for p in described["partitions"]]
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, enable_auto_commit=False, fetch_max_wait_ms=50
        )
        await consumer.start()
        try:
            tps = [TopicPartition(self.topic, p) for p in sorted(parts)]
            consumer.assign(tps)
            await consumer.seek_to_end(*tps)
            for tp in tps:
                await consumer.position(tp)
            self._ready.set()
            while not self._stop.is_set():
                batch = await consumer.getmany(timeout_ms=200)
                now = time.time()
                for records in batch.values():
                    for r in records:
                        head = json.loads(r.value[: r.value.find(b',"payload"')] + b"}")
                        self.seen[int(head["outbox_id"])] = (r.timestamp / 1000.0, now)
        finally:
            self._ready.set()
            await consumer.stop()
