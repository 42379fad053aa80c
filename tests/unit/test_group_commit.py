"""One transaction for the batches a service's partition actors hand in together."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from outbox_app.worker.group_commit import GroupCommit


class SlowHandler:
    """Records each call; the first call waits until released (a slow transaction)."""

    def __init__(self) -> None:
        self.calls: list[list[int]] = []
        self.first_started = asyncio.Event()
        self.release_first = asyncio.Event()

    async def __call__(self, items: list[int]) -> None:
        self.calls.append(items)
        if len(self.calls) == 1:
            self.first_started.set()
            await self.release_first.wait()


async def until(condition: Callable[[], bool], deadline: float = 5.0) -> None:
    async def wait() -> None:
        while not condition():
            await asyncio.sleep(0)

    await asyncio.wait_for(wait(), deadline)


def test_batches_handed_in_during_a_transaction_share_the_next_one() -> None:
    async def scenario() -> list[list[int]]:
        handle = SlowHandler()
        group = GroupCommit(handle, max_items=10)
        first = asyncio.ensure_future(group.submit([1, 2]))
        await asyncio.wait_for(handle.first_started.wait(), 5)
        others = [asyncio.ensure_future(group.submit(b)) for b in ([3], [4, 5], [6])]
        await until(lambda: len(group._waiting) == 3)
        assert len(handle.calls) == 1  # the others wait for the running transaction
        handle.release_first.set()
        await asyncio.wait_for(asyncio.gather(first, *others), 5)
        return handle.calls

    assert asyncio.run(scenario()) == [[1, 2], [3, 4, 5, 6]]


def test_a_group_never_exceeds_max_items_and_never_splits_a_batch() -> None:
    async def scenario() -> list[list[int]]:
        handle = SlowHandler()
        group = GroupCommit(handle, max_items=3)
        first = asyncio.ensure_future(group.submit([0]))
        await asyncio.wait_for(handle.first_started.wait(), 5)
        others = [asyncio.ensure_future(group.submit(b)) for b in ([1, 2], [3, 4], [5], [6])]
        await until(lambda: len(group._waiting) == 4)
        handle.release_first.set()
        await asyncio.wait_for(asyncio.gather(first, *others), 5)
        return handle.calls

    assert asyncio.run(scenario()) == [[0], [1, 2], [3, 4, 5], [6]]


def test_a_failure_reaches_every_caller_of_its_group_and_the_next_group_still_runs() -> None:
    async def scenario() -> tuple[list[BaseException | None], list[list[int]]]:
        calls: list[list[int]] = []
        gate = asyncio.Event()

        async def handle(items: list[int]) -> None:
            calls.append(items)
            if len(calls) == 1:
                await gate.wait()
            if len(calls) == 2:
                raise RuntimeError("database gone")

        group = GroupCommit(handle, max_items=10)
        first = asyncio.ensure_future(group.submit([1]))
        await until(lambda: len(calls) == 1)
        failing = [
            asyncio.ensure_future(group.submit([2])),
            asyncio.ensure_future(group.submit([3])),
        ]
        await until(lambda: len(group._waiting) == 2)
        gate.set()
        await asyncio.wait_for(first, 5)
        results = await asyncio.gather(*failing, return_exceptions=True)
        await asyncio.wait_for(group.submit([4]), 5)
        return [r if isinstance(r, BaseException) else None for r in results], calls

    results, calls = asyncio.run(scenario())
    assert [str(r) for r in results] == ["database gone", "database gone"]
    assert calls == [[1], [2, 3], [4]]


def test_a_caller_cancelled_while_waiting_is_left_out_and_one_cancelled_while_running_does_not_stop_the_transaction() -> (
    None
):
    async def scenario() -> list[list[int]]:
        handle = SlowHandler()
        group = GroupCommit(handle, max_items=10)
        running = asyncio.ensure_future(group.submit([1]))
        await asyncio.wait_for(handle.first_started.wait(), 5)
        waiting = asyncio.ensure_future(group.submit([2]))
        kept = asyncio.ensure_future(group.submit([3]))
        await until(lambda: len(group._waiting) == 2)
        waiting.cancel()  # a revoked partition's actor, before its batch ran
        running.cancel()  # and one whose batch is in the running transaction
        await asyncio.sleep(0)
        handle.release_first.set()
        await asyncio.wait_for(kept, 5)
        assert waiting.cancelled() and running.cancelled()
        return handle.calls

    assert asyncio.run(scenario()) == [[1], [3]]


def test_close_cancels_the_running_transaction_and_its_callers() -> None:
    async def scenario() -> bool:
        handle = SlowHandler()
        group = GroupCommit(handle, max_items=10)
        caller = asyncio.ensure_future(group.submit([1]))
        await asyncio.wait_for(handle.first_started.wait(), 5)
        await asyncio.wait_for(group.close(), 5)
        with pytest.raises(asyncio.CancelledError):
            await caller
        return not group._running

    assert asyncio.run(scenario())


def test_concurrency_runs_that_many_groups_at_once() -> None:
    async def scenario() -> int:
        started = 0
        most = 0
        release = asyncio.Event()

        async def handle(items: list[int]) -> None:
            nonlocal started, most
            started += 1
            most = max(most, started)
            await release.wait()
            started -= 1

        group = GroupCommit(handle, max_items=1, concurrency=2)
        callers = [asyncio.ensure_future(group.submit([i])) for i in range(5)]
        await until(lambda: most == 2)
        release.set()
        await asyncio.wait_for(asyncio.gather(*callers), 5)
        return most

    assert asyncio.run(scenario()) == 2


def test_a_second_transaction_starts_only_for_a_full_group() -> None:
    async def scenario() -> list[list[int]]:
        handle = SlowHandler()
        group = GroupCommit(handle, max_items=3, concurrency=2)
        first = asyncio.ensure_future(group.submit([0]))
        await asyncio.wait_for(handle.first_started.wait(), 5)
        small = asyncio.ensure_future(group.submit([1]))
        await until(lambda: len(group._waiting) == 1)
        assert len(handle.calls) == 1  # a light load: it waits to share the next one
        full = asyncio.ensure_future(group.submit([2, 3]))
        await until(lambda: len(handle.calls) == 2)  # three waiting: a call of their own
        assert not group._waiting
        handle.release_first.set()
        await asyncio.wait_for(asyncio.gather(first, small, full), 5)
        return handle.calls

    assert asyncio.run(scenario()) == [[0], [1, 2, 3]]


@pytest.mark.parametrize(("max_items", "concurrency"), [(0, 1), (1, 0)])
def test_limits_below_one_are_refused(max_items: int, concurrency: int) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        GroupCommit(lambda items: asyncio.sleep(0), max_items, concurrency)
