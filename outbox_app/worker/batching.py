"""Group commit for the consumer: hand a handler whatever arrived while the previous
batch was being handled.

Faust's ``stream.take(n, within)`` waits up to ``within`` for every batch and stops
reading while a batch is handled, so each batch costs the wait plus the transaction
and small batches follow one another. Here the stream keeps being read while a batch
is in its transaction: a lone event is handled at once (no wait), and under load the
next batch is everything that arrived meanwhile, up to ``max_batch``.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterable, Awaitable, Callable
from contextlib import suppress
from typing import TypeVar

T = TypeVar("T")


async def run_batches(
    items: AsyncIterable[T],
    handle: Callable[[list[T]], Awaitable[object]],
    max_batch: int,
) -> None:
    """Read ``items`` and call ``handle`` with one batch at a time, in arrival order.

    Returns once ``items`` is exhausted and every item was handled. An exception from
    ``handle`` or from ``items`` stops both sides and propagates; so does cancellation.
    """
    if max_batch < 1:
        raise ValueError(f"max_batch must be at least 1, got {max_batch}")
    queue: deque[T] = deque()
    arrived = asyncio.Event()  # the queue is not empty, or the input ended
    room = asyncio.Event()  # the queue is below max_batch (back-pressure on the reader)
    room.set()
    ended = False

    async def read() -> None:
        nonlocal ended
        async for item in items:
            queue.append(item)
            arrived.set()
            if len(queue) >= max_batch:
                room.clear()
                await room.wait()
        ended = True
        arrived.set()

    async def work() -> None:
        while True:
            await arrived.wait()
            if not queue:
                if ended:
                    return
                arrived.clear()
                continue
            batch = [queue.popleft() for _ in range(min(len(queue), max_batch))]
            if not queue and not ended:
                arrived.clear()
            room.set()
            await handle(batch)

    reader = asyncio.ensure_future(read())
    worker = asyncio.ensure_future(work())
    try:
        done, _ = await asyncio.wait({reader, worker}, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            task.result()  # re-raise the first failure
    finally:
        for task in (reader, worker):
            task.cancel()
        for task in (reader, worker):
            with suppress(asyncio.CancelledError, Exception):
                await task
