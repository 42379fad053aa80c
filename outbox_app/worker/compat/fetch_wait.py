"""Faust 0.15 passes a hard-coded ``fetch_max_wait_ms=1500`` to aiokafka, which puts about
a second of latency on every quiet topic, and has no setting for it. This consumer
thread sets aiokafka's private ``_fetch_max_wait_ms`` on the consumer it creates, before
``AIOKafkaConsumer.start()`` reads it to build its fetcher (``OUTBOX_FETCH_MAX_WAIT_MS``).
"""

from __future__ import annotations

from typing import Any

import aiokafka
from faust.transport.drivers import aiokafka as faust_aiokafka

DEFAULT_FETCH_MAX_WAIT_MS = 50


def set_fetch_max_wait(consumer: aiokafka.AIOKafkaConsumer, wait_ms: int) -> None:
    consumer._fetch_max_wait_ms = int(wait_ms)


class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        set_fetch_max_wait(
            consumer, getattr(self.app, "fetch_max_wait_ms", DEFAULT_FETCH_MAX_WAIT_MS)
        )
        return consumer
