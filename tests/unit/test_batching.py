"""Group commit in the consumer: what arrives during a batch is the next batch."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from outbox_app.worker.batching import run_batches


async def feed(queue: asyncio.Queue[int | None]) -> AsyncIterator[int]:
    while (item := await queue.get()) is not None:
        yield item


def test_a_lone_item_is_handled_at_once_and_later_ones_batch_behind_it() -> None:
    async def scenario() -> list[list[int]]:
        queue: asyncio.Queue[int | None] = asyncio.Queue()
        batches: list[list[int]] = []
        first_started, release_first = asyncio.Event(), asyncio.Event()

        async def handle(batch: list[int]) -> None:
            batches.append(batch)
            if len(batches) == 1:
                first_started.set()
                await release_first.wait()  # a slow first transaction

        runner = asyncio.ensure_future(run_batches(feed(queue), handle, max_batch=3))
        queue.put_nowait(1)
        await asyncio.wait_for(first_started.wait(), 5)  # no waiting to fill a batch
        for item in range(2, 7):
            queue.put_nowait(item)
        # The reader takes items in while the batch is handled, up to max_batch.
        while queue.qsize() > 2:
            await asyncio.sleep(0)
        release_first.set()
        queue.put_nowait(None)
        await asyncio.wait_for(runner, 5)
        return batches

    assert asyncio.run(scenario()) == [[1], [2, 3, 4], [5, 6]]


def test_order_is_kept_and_nothing_is_lost() -> None:
    async def scenario() -> list[int]:
        queue: asyncio.Queue[int | None] = asyncio.Queue()
        seen: list[int] = []

        async def handle(batch: list[int]) -> None:
            await asyncio.sleep(0)
            seen.extend(batch)

        runner = asyncio.ensure_future(run_batches(feed(queue), handle, max_batch=7))
        for item in range(500):
            queue.put_nowait(item)
            if item % 13 == 0:
                await asyncio.sleep(0)
        queue.put_nowait(None)
        await asyncio.wait_for(runner, 5)
        return seen

    assert asyncio.run(scenario()) == list(range(500))


def test_a_failing_handler_stops_the_reader_and_propagates() -> None:
    async def scenario() -> None:
        queue: asyncio.Queue[int | None] = asyncio.Queue()
        queue.put_nowait(1)

        async def handle(batch: list[int]) -> None:
            raise RuntimeError(f"handler bug on {batch}")

        await asyncio.wait_for(run_batches(feed(queue), handle, max_batch=2), 5)

    with pytest.raises(RuntimeError, match=r"handler bug on \[1\]"):
        asyncio.run(scenario())


def test_a_failing_input_propagates_after_nothing_more_is_handled() -> None:
    async def broken() -> AsyncIterator[int]:
        yield 1
        raise ConnectionError("stream closed")

    handled: list[list[int]] = []

    async def handle(batch: list[int]) -> None:
        handled.append(batch)

    with pytest.raises(ConnectionError, match="stream closed"):
        asyncio.run(asyncio.wait_for(run_batches(broken(), handle, max_batch=2), 5))


def test_max_batch_must_be_positive() -> None:
    async def empty() -> AsyncIterator[int]:
        return
        yield

    async def handle(batch: list[int]) -> None:
        raise AssertionError("never called")

    with pytest.raises(ValueError, match="max_batch must be at least 1, got 0"):
        asyncio.run(run_batches(empty(), handle, max_batch=0))
