"""One transaction for the batches of all of a service's partition actors.

Each partition has an actor of its own (a key keeps its partition, so it keeps its order,
and a revoked partition's actor stops alone). Left alone, each actor would run its own
transactions: at a few hundred events a second over four partitions that is a
transaction per two or three events, and a transaction's fixed cost (its round trips,
the handler session, the thread hop) was most of the worker's CPU. Here an actor hands
its batch in and waits; batches handed in while a transaction runs go into the next
one together, up to ``max_items``.

An actor's next batch is read only once its previous one is handled, so a partition's
events are still handled in order, and a key's too.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import Generic, TypeVar

T = TypeVar("T")


class GroupCommit(Generic[T]):
    """Runs ``handle`` over the concatenated batches handed in by ``submit``, at most
    ``max_items`` items per call (a batch is never split). A call starts when none is
    running, or, up to ``concurrency`` calls at a time, when the waiting batches fill a
    call of their own."""

    def __init__(
        self,
        handle: Callable[[list[T]], Awaitable[object]],
        max_items: int,
        concurrency: int = 1,
    ) -> None:
        if max_items < 1 or concurrency < 1:
            raise ValueError(
                f"max_items and concurrency must be at least 1, got {max_items}, {concurrency}"
            )
        self._handle = handle
        self._max_items = max_items
        self._concurrency = concurrency
        self._waiting: deque[tuple[list[T], asyncio.Future[None]]] = deque()
        self._running: set[asyncio.Future[None]] = set()

    async def submit(self, items: list[T]) -> None:
        """Return once ``items`` were handled (with whatever else was handed in with
        them); raises what ``handle`` raised. Cancelling the caller does not cancel a
        call already running: its transaction ends either way."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((items, done))
        self._start()
        await done

    def _start(self) -> None:
        # A call beside running ones only for a full group: under a light load batches
        # wait and share the next transaction; under a backlog the calls overlap.
        while self._waiting and (
            not self._running
            or (len(self._running) < self._concurrency and self._waiting_items() >= self._max_items)
        ):
            group = self._take()
            if group:
                task = asyncio.ensure_future(self._run(group))
                self._running.add(task)
                task.add_done_callback(self._finished)

    def _waiting_items(self) -> int:
        return sum(len(items) for items, done in self._waiting if not done.done())

    def _take(self) -> list[tuple[list[T], asyncio.Future[None]]]:
        group: list[tuple[list[T], asyncio.Future[None]]] = []
        size = 0
        while self._waiting:
            items, done = self._waiting[0]
            if done.done():  # its actor was cancelled while it waited: nothing to do
                self._waiting.popleft()
                continue
            if group and size + len(items) > self._max_items:
                break
            self._waiting.popleft()
            group.append((items, done))
            size += len(items)
        return group

    async def _run(self, group: list[tuple[list[T], asyncio.Future[None]]]) -> None:
        try:
            await self._handle([item for items, _ in group for item in items])
        except asyncio.CancelledError:
            for _, done in group:
                done.cancel()
            raise
        except Exception as exc:  # noqa: BLE001 - handed to every caller of the group
            for _, done in group:
                if not done.done():
                    done.set_exception(exc)
        else:
            for _, done in group:
                if not done.done():
                    done.set_result(None)

    def _finished(self, task: asyncio.Future[None]) -> None:
        self._running.discard(task)
        self._start()

    async def close(self) -> None:
        """Cancel the calls still running (the worker is stopping)."""
        for task in list(self._running):
            task.cancel()
        for task in list(self._running):
            with suppress(asyncio.CancelledError, Exception):  # their callers were told
                await task
