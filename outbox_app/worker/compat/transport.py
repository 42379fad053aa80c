"""The Kafka transport of the outbox worker: Faust's aiokafka driver with the consumer of
``record_handoff`` and the consumer thread of ``fetch_wait``."""

from __future__ import annotations

from typing import Any, ClassVar

from faust.transport.drivers import aiokafka as faust_aiokafka

from outbox_app.worker.compat.fetch_wait import ConsumerThread
from outbox_app.worker.compat.record_handoff import Consumer as HandoffConsumer


class Consumer(HandoffConsumer):
    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(faust_aiokafka.Transport):
    Consumer: ClassVar[Any] = Consumer
