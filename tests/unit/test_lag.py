"""The lag cache: one broker query per interval however many ask, callers never wait long,
and a broker that does not answer gives the last value marked stale, never a failure."""

from __future__ import annotations

import asyncio
import time

from outbox_app.worker.lag import LagMonitor, LagSnapshot, ServiceLag, partition_lag


def snapshot(lag: int) -> LagSnapshot:
    return LagSnapshot(
        time.time(), {"agent": ServiceLag("p.outbox.agent", [partition_lag(0, 10, 0, 10 + lag)])}
    )


class FakeBroker:
    def __init__(self) -> None:
        self.lag = 3
        self.calls = 0
        self.down = False
        self.hang = asyncio.Event()
        self.hanging = False

    async def query(self) -> LagSnapshot:
        self.calls += 1
        if self.hanging:
            await self.hang.wait()
        if self.down:
            raise ConnectionError("broker at 127.0.0.1:1 refused the connection")
        return snapshot(self.lag)


def test_partition_lag_counts_from_the_committed_offset_or_the_first_record() -> None:
    assert partition_lag(0, 10, 0, 15).lag == 5
    assert partition_lag(1, -1, 4, 9) == partition_lag(1, -1, 4, 9)
    no_commit = partition_lag(1, -1, 4, 9)
    assert (no_commit.committed, no_commit.lag) == (None, 5)  # read from the beginning
    assert partition_lag(2, 3, 7, 9).lag == 2  # offsets before the log start are gone
    assert partition_lag(3, 9, 0, 9).lag == 0


def test_many_callers_share_one_query_per_interval() -> None:
    async def run() -> None:
        broker = FakeBroker()
        monitor = LagMonitor(broker.query, min_interval_s=60)
        reports = await asyncio.gather(*(monitor.report() for _ in range(20)))
        assert broker.calls == 1
        assert all(r.snapshot is not None and not r.stale and r.error is None for r in reports)
        doc = reports[0].as_dict("outbox-agent")
        assert doc["group"] == "outbox-agent" and doc["services"]["agent"]["total"] == 3
        assert doc["services"]["agent"]["partitions"] == [
            {"partition": 0, "committed": 10, "end": 13, "lag": 3}
        ]
        await monitor.report()
        assert broker.calls == 1  # within the interval: the cached answer

    asyncio.run(run())


def test_a_broker_that_fails_gives_the_last_value_marked_stale_then_recovers() -> None:
    async def run() -> None:
        broker = FakeBroker()
        monitor = LagMonitor(broker.query, min_interval_s=0)
        first = await monitor.report()
        broker.down, broker.lag = True, 50
        failed = await monitor.report()
        assert failed.stale and failed.snapshot is first.snapshot  # the last value, not 50
        assert failed.error is not None and "refused the connection" in failed.error
        broker.down = False
        back = await monitor.report()
        assert not back.stale and back.error is None
        assert back.snapshot is not None and back.snapshot.services["agent"].total == 50

    asyncio.run(run())


def test_a_hanging_broker_does_not_hold_callers_and_is_not_asked_twice() -> None:
    async def run() -> None:
        broker = FakeBroker()
        monitor = LagMonitor(broker.query, min_interval_s=0, answer_within_s=0.05)
        await monitor.report()
        broker.hanging = True
        started = time.monotonic()
        waiting = await asyncio.gather(*(monitor.report() for _ in range(5)))
        assert time.monotonic() - started < 5  # bounded by answer_within_s, not the broker
        assert broker.calls == 2  # one query under way, shared
        assert all(r.snapshot is not None for r in waiting)  # the last value meanwhile
        never = LagMonitor(broker.query, answer_within_s=0.05)
        nothing = await never.report()
        assert nothing.snapshot is None and nothing.stale
        assert nothing.as_dict("g")["services"] == {} and nothing.as_dict("g")["as_of"] is None
        broker.hang.set()
        await monitor.close()
        await never.close()

    asyncio.run(run())


def test_a_query_that_times_out_is_reported_as_such() -> None:
    async def run() -> None:
        broker = FakeBroker()
        broker.hanging = True
        monitor = LagMonitor(broker.query, query_timeout_s=0.05, answer_within_s=1)
        report = await monitor.report()
        assert report.stale and report.error == "the broker did not answer within 0.05s"
        await monitor.close()

    asyncio.run(run())
