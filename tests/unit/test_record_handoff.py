"""The record hand-off of ``compat.record_handoff``: a callback that does not suspend runs
inline, one that suspends goes on in a task that an interrupt (a rebalance's suspended
flow, a stop) cancels, and failures reach Faust's fetch loop either way."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from outbox_app.worker.compat.record_handoff import Consumer


def handoff_consumer() -> Any:
    """The hand-off's part of a consumer: its three events and nothing else."""
    consumer: Any = object.__new__(Consumer)
    consumer.__dict__.update(
        suspend_flow=asyncio.Event(), _stopped=asyncio.Event(), _crashed=asyncio.Event()
    )
    return consumer


async def handoff(consumer: Any, callback: Any) -> Any:
    return await consumer.wait_first(callback, consumer.suspend_flow.wait())


def test_a_callback_that_does_not_suspend_runs_inline_without_a_task() -> None:
    async def main() -> None:
        consumer = handoff_consumer()
        ran = []

        async def callback() -> str:
            ran.append(asyncio.current_task())
            return "put"

        results = await handoff(consumer, callback())
        assert results.results == ["put"] and not results.stopped
        assert ran == [asyncio.current_task()]  # this task: none was made for it

    asyncio.run(main())


def test_a_callback_that_suspends_finishes_in_a_task_with_its_result() -> None:
    async def main() -> None:
        consumer = handoff_consumer()
        room = asyncio.get_running_loop().create_future()
        steps = []

        async def callback() -> int:
            steps.append("queue full")
            got: int = await room  # back-pressure: the stream's queue is full
            await asyncio.sleep(0)
            steps.append("put")
            return got

        waiting = asyncio.ensure_future(handoff(consumer, callback()))
        await asyncio.sleep(0)
        assert steps == ["queue full"] and not waiting.done()
        room.set_result(7)
        results = await asyncio.wait_for(waiting, 5)
        assert results.results == [7] and not results.stopped
        assert steps == ["queue full", "put"]

    asyncio.run(main())


def test_a_suspended_flow_cancels_a_waiting_callback() -> None:
    async def main() -> None:
        consumer = handoff_consumer()
        cancelled = asyncio.Event()

        async def callback() -> None:
            try:
                await asyncio.get_running_loop().create_future()  # never has room
            except asyncio.CancelledError:
                cancelled.set()
                raise

        waiting = asyncio.ensure_future(handoff(consumer, callback()))
        await asyncio.sleep(0)
        consumer.suspend_flow.set()  # a rebalance starts
        results = await asyncio.wait_for(waiting, 5)
        assert results.stopped and results.results == []
        await asyncio.wait_for(cancelled.wait(), 5)

    asyncio.run(main())


@pytest.mark.parametrize(("flag", "seen"), [("_stopped", True), ("suspend_flow", False)])
def test_once_interrupted_the_next_record_is_not_handed_over(flag: str, seen: bool) -> None:
    """Also before the shared interrupt future has seen the flag: inline hand-offs do not
    yield to the loop, so a rebalance's suspend can be set while it still waits."""

    async def main() -> None:
        consumer = handoff_consumer()
        ran = []

        async def callback(n: int) -> None:
            ran.append(n)

        assert not (await handoff(consumer, callback(1))).stopped
        getattr(consumer, flag).set()  # between two records
        if seen:
            await asyncio.wait_for(asyncio.shield(consumer._interrupt), 5)
        else:
            assert not consumer._interrupt.done()
        second = callback(2)
        results = await handoff(consumer, second)
        assert results.stopped and ran == [1]
        assert second.cr_frame is None  # closed, never run: no warning, no late put

    asyncio.run(main())


@pytest.mark.parametrize("suspends", [False, True])
def test_a_failing_callback_raises_to_the_fetch_loop(suspends: bool) -> None:
    async def main() -> None:
        consumer = handoff_consumer()

        async def callback() -> None:
            if suspends:
                await asyncio.sleep(0)
            raise RuntimeError("channel closed")

        with pytest.raises(RuntimeError, match="channel closed"):
            await asyncio.wait_for(handoff(consumer, callback()), 5)

    asyncio.run(main())
