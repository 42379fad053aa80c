"""The Kafka transport of the outbox worker: Faust's aiokafka driver with two changes.

- The consumer honours ``OUTBOX_FETCH_MAX_WAIT_MS``: Faust 0.15 passes a hard-coded
  ``fetch_max_wait_ms=1500`` to aiokafka, which puts about a second of latency on
  every quiet topic; there is no setting for it.
- Faust's fetch loop hands each record to the streams through
  ``wait_first(callback(message), suspend_flow.wait())``, which starts four tasks and
  cancels three of them per record: at a few thousand records a second that was a
  tenth of the worker's CPU. The same wait here costs one task per record, racing one
  shared "suspended, stopped or crashed" future.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, ClassVar

import aiokafka
from faust.transport.drivers import aiokafka as faust_aiokafka
from mode.services import WaitResults

DEFAULT_FETCH_MAX_WAIT_MS = 50


class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        wait = getattr(self.app, "fetch_max_wait_ms", DEFAULT_FETCH_MAX_WAIT_MS)
        # Read by AIOKafkaConsumer.start() when it builds its fetcher.
        consumer._fetch_max_wait_ms = int(wait)
        return consumer


class Consumer(faust_aiokafka.Consumer):
    _interrupt: asyncio.Future[Any] | None = None

    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def wait_first(self, *coros: Any, timeout: Any = None) -> WaitResults:
        if timeout is None and len(coros) == 2 and self._is_suspend_wait(coros[1]):
            return await self._deliver(coros[0], coros[1])
        return await super().wait_first(*coros, timeout=timeout)

    def _is_suspend_wait(self, coro: Any) -> bool:
        frame = getattr(coro, "cr_frame", None)
        return frame is not None and frame.f_locals.get("self") is self.suspend_flow

    async def _deliver(self, callback: Coroutine[Any, Any, Any], suspend: Any) -> WaitResults:
        suspend.close()  # replaced by the shared interrupt future
        interrupt = self._interrupt_future()
        if interrupt.done():
            callback.close()
            return WaitResults([], [], True)
        task = asyncio.ensure_future(callback)
        await asyncio.wait((task, interrupt), return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            task.cancel()  # suspended (a rebalance) or stopping: as Faust's wait_first does
            return WaitResults([], [], True)
        return WaitResults([callback], [task.result()], False)

    def _interrupt_future(self) -> asyncio.Future[Any]:
        """Done once the flow is suspended, or the consumer stops or crashes; made anew
        when the flow resumes."""
        current = self._interrupt
        if current is not None and not (current.done() and not self._interrupted()):
            return current
        waits: list[asyncio.Future[Any]] = [
            asyncio.ensure_future(self.suspend_flow.wait()),
            asyncio.ensure_future(self._stopped.wait()),
            asyncio.ensure_future(self._crashed.wait()),
        ]
        interrupt = asyncio.ensure_future(_first_of(waits))
        self._interrupt = interrupt
        return interrupt

    def _interrupted(self) -> bool:
        return self.suspend_flow.is_set() or self._stopped.is_set() or self._crashed.is_set()


async def _first_of(waits: list[asyncio.Future[Any]]) -> None:
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()


class Transport(faust_aiokafka.Transport):
    Consumer: ClassVar[Any] = Consumer
