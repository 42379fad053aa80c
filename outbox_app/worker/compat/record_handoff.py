"""A cheaper hand-off of each fetched record to the streams.

Faust's fetch loop hands each record over through
``wait_first(callback(message), suspend_flow.wait())``, which starts four tasks and
cancels three of them per record: at a few thousand records a second that was a tenth
of the worker's CPU. Here the callback's first step runs inline: it puts the record on
its stream's queue and, while the queue has room, finishes there, with no task and no
wait (a task and a wait cost about 25 us per record, and a turn of the event loop). Only
a callback that suspends (a full queue: back-pressure) becomes a task, racing one shared
"suspended, stopped or crashed" future. Faust's call is recognised by its second
coroutine (``suspend_flow.wait()``, read from the coroutine's frame); any other call
goes to mode's ``wait_first`` unchanged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Generator
from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka
from mode.services import WaitResults


class Consumer(faust_aiokafka.Consumer):
    _interrupt: asyncio.Future[Any] | None = None

    async def wait_first(self, *coros: Any, timeout: Any = None) -> WaitResults:
        if timeout is None and len(coros) == 2 and self.is_suspend_wait(coros[1]):
            return await self._deliver(coros[0], coros[1])
        return await super().wait_first(*coros, timeout=timeout)

    def is_suspend_wait(self, coro: Any) -> bool:
        frame = getattr(coro, "cr_frame", None)
        return frame is not None and frame.f_locals.get("self") is self.suspend_flow

    async def _deliver(self, callback: Coroutine[Any, Any, Any], suspend: Any) -> WaitResults:
        suspend.close()  # replaced by the shared interrupt future
        interrupt = self._interrupt_future()
        # The flags, not the future: records handed over inline do not yield to the loop,
        # so the shared future may not have seen a suspend that is already set.
        if self._interrupted():
            callback.close()
            return WaitResults([], [], True)
        try:
            first = callback.send(None)
        except StopIteration as done:  # handed over without suspending: the usual case
            return WaitResults([callback], [done.value], False)
        task = asyncio.ensure_future(_Rest(callback, first).run())
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


class _Rest:
    """The rest of a coroutine whose first step already ran and yielded ``first``: awaited
    inside a task, it goes on as ``await coro`` would have (the task waits on what the
    coroutine yields, cancellation is thrown into it)."""

    def __init__(self, coro: Coroutine[Any, Any, Any], first: Any) -> None:
        self.coro, self.first = coro, first

    async def run(self) -> Any:
        return await self

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, step = self.coro, self.first
        while True:
            try:
                sent = yield step
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # noqa: BLE001 - handed to the coroutine
                try:
                    step = coro.throw(exc)
                except StopIteration as done:
                    return done.value
            else:
                try:
                    step = coro.send(sent)
                except StopIteration as done:
                    return done.value


async def _first_of(waits: list[asyncio.Future[Any]]) -> None:
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
