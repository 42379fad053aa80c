"""Canaries: each private Faust, mode or aiokafka API that ``outbox_app.worker.compat``
relies on, checked against the installed versions. A failure here means an upgrade
changed what a workaround reaches into: read that module's docstring before bumping
the version bounds in pyproject.toml."""

from __future__ import annotations

import asyncio
import inspect
import logging

import aiokafka
import mode.timers
from aiokafka.errors import KafkaError
from faust.transport import consumer as faust_consumer
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.utils.terminal import spinners
from mode import Service

from outbox_app.worker.compat import fetch_wait, log_noise, producer, record_handoff


def test_fetch_wait_aiokafka_reads_the_attribute_when_it_starts() -> None:
    async def make() -> aiokafka.AIOKafkaConsumer:
        return aiokafka.AIOKafkaConsumer(bootstrap_servers="127.0.0.1:1")

    consumer = asyncio.run(make())
    assert consumer._fetch_max_wait_ms == 500  # aiokafka's default, set in __init__
    fetch_wait.set_fetch_max_wait(consumer, 50)
    assert consumer._fetch_max_wait_ms == 50
    start = inspect.getsource(aiokafka.AIOKafkaConsumer.start)
    assert "fetch_max_wait_ms=self._fetch_max_wait_ms" in start
    assert hasattr(faust_aiokafka.AIOKafkaConsumerThread, "_create_worker_consumer")


def test_record_handoff_faust_still_waits_on_the_callback_and_the_suspend_flow() -> None:
    source = inspect.getsource(faust_consumer.Consumer._drain_messages)
    assert "await self.wait_first(" in source
    assert "callback(message), self.suspend_flow.wait()" in source
    assert "self.suspend_flow = Event()" in inspect.getsource(faust_consumer.Consumer.__init__)
    service = Service()  # the interrupt future also waits on these two events
    assert service._stopped.is_set() is False and service._crashed.is_set() is False


def test_record_handoff_recognises_the_suspend_wait_by_its_frame() -> None:
    class Flow:
        async def wait(self) -> None:
            await asyncio.sleep(0)

    flow = Flow()
    fake = object.__new__(record_handoff.Consumer)
    fake.__dict__["suspend_flow"] = flow
    coro = flow.wait()
    other = asyncio.sleep(0)
    try:
        assert record_handoff.Consumer.is_suspend_wait(fake, coro)
        assert not record_handoff.Consumer.is_suspend_wait(fake, other)
    finally:
        coro.close()
        other.close()


def test_producer_faust_keeps_the_aiokafka_producer_behind_ensure_producer() -> None:
    assert "_ensure_producer" in vars(faust_aiokafka.Producer)
    for name in ("create_batch", "send_batch", "partitions_for"):
        assert callable(getattr(aiokafka.AIOKafkaProducer, name)), name
    source = inspect.getsource(aiokafka.AIOKafkaProducer)
    assert "self.client = " in source
    from aiokafka.cluster import ClusterMetadata

    assert callable(ClusterMetadata.available_partitions_for_topic)
    assert producer.available_partitions.__doc__


def test_log_noise_messages_and_class_names_are_still_the_same() -> None:
    assert log_noise.OVERLAP_MESSAGE in inspect.getsource(mode.timers)
    assert spinners.SpinnerHandler.__name__ == log_noise.SPINNER_HANDLER
    record = logging.LogRecord(
        "mode.timers",
        logging.INFO,
        __file__,
        1,
        log_noise.OVERLAP_MESSAGE,
        ("outbox.relay.x",),
        None,
    )
    assert not log_noise.RelayOverlapFilter().filter(record)
    other = logging.LogRecord(
        "mode.timers", logging.INFO, __file__, 1, log_noise.OVERLAP_MESSAGE, ("mine",), None
    )
    assert log_noise.RelayOverlapFilter().filter(other)


def test_log_noise_aiokafka_still_fails_the_drain_waiter_of_a_failed_batch() -> None:
    from aiokafka.producer.message_accumulator import MessageBatch

    failure = inspect.getsource(MessageBatch.failure)
    assert "self._drain_waiter.set_exception(exception)" in failure
    # Only when no per-message futures exist (the batch API) is nobody there to read it.
    assert "if self._msg_futures:" in failure
    try:
        raise KafkaError("lost")
    except KafkaError as exc:
        record = logging.LogRecord(
            "asyncio",
            logging.ERROR,
            __file__,
            1,
            log_noise.UNRETRIEVED_MESSAGE,
            (),
            (KafkaError, exc, None),
        )
    assert not log_noise.DrainWaiterFilter().filter(record)
    mine = logging.LogRecord(
        "asyncio",
        logging.ERROR,
        __file__,
        1,
        log_noise.UNRETRIEVED_MESSAGE,
        (),
        (ValueError, ValueError("x"), None),
    )
    assert log_noise.DrainWaiterFilter().filter(mine)  # anything else is still logged


def test_transport_faust_builds_its_transport_and_consumer_thread_through_the_hooks() -> None:
    import faust

    from outbox_app.worker.compat.transport import OutboxTransportApp, Transport

    class App(OutboxTransportApp, faust.App):
        pass

    app = App("compat-canary", broker="kafka://127.0.0.1:1", autodiscover=False)
    assert isinstance(app.transport, Transport)  # Faust asked App._new_transport for it
    assert "self._new_transport()" in inspect.getsource(faust.App)
    # ... and the driver's consumer asks _new_consumer_thread for its thread
    assert hasattr(faust_aiokafka.Consumer, "_new_consumer_thread")
    delegate = inspect.getsource(faust_consumer.ThreadDelegateConsumer.__init__)
    assert "self._thread = self._new_consumer_thread()" in delegate
