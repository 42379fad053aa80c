"""The Kafka transport of the outbox worker: Faust's aiokafka driver with the consumer of
``record_handoff`` and the consumer thread of ``fetch_wait``, and the app mixin that makes
Faust use it. Faust picks a transport from the broker URL's scheme and has no setting for
a custom one, so both hooks are private methods: ``App._new_transport`` and
``Consumer._new_consumer_thread`` (canaries in tests/unit/test_compat.py)."""

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


class OutboxTransportApp:
    """Mixed into a ``faust.App``: its transport is ``Transport``; ``fetch_max_wait_ms`` is
    read by the consumer thread (``OUTBOX_FETCH_MAX_WAIT_MS``)."""

    fetch_max_wait_ms: int = 50
    conf: Any

    def _new_transport(self) -> Any:
        return Transport(self.conf.broker_consumer, self)
