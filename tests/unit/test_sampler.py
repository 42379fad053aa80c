"""The dashboard's samples: rates from successive counts, latency percentiles of what this
worker's consumers handled since the previous sample."""

from __future__ import annotations

import asyncio
from typing import Any

from outbox_app.ops.web.sampler import StatsSampler, percentiles
from outbox_app.worker.metrics import LatencyWindow


def counts(published: int, consumed: int) -> dict[str, Any]:
    return {"pending": 0, "published": published, "consumed": consumed, "dead": 0}


def test_percentiles_are_nearest_rank_in_milliseconds() -> None:
    assert percentiles([]) == (None, None)
    assert percentiles([0.25]) == (250.0, 250.0)
    values = [n / 1000 for n in range(1, 101)]  # 1 ms .. 100 ms
    assert percentiles(values) == (50.0, 99.0)
    assert percentiles(list(reversed(values))) == (50.0, 99.0)


def test_the_latency_window_hands_over_what_came_since_it_was_last_taken() -> None:
    window = LatencyWindow(keep=3)
    window.add("agent", [0.1, 0.2])
    window.add("agent", [0.3, 0.4])  # bounded: the oldest goes
    window.add("task", [])
    assert window.take() == {"agent": [0.2, 0.3, 0.4]}
    assert window.take() == {}


def test_points_carry_published_rate_and_latency_percentiles() -> None:
    docs = [
        {"services": {"agent": counts(0, 0)}},
        {"services": {"agent": counts(5, 10)}},
        {"services": {"agent": counts(5, 10)}},
    ]
    window = LatencyWindow()

    async def take() -> dict[str, Any]:
        return docs.pop(0)

    async def run() -> StatsSampler:
        sampler = StatsSampler(take, latencies=window.take)
        window.add("agent", [9.0])  # before the first sample: no moment to plot it at
        await sampler.latest()
        window.add("agent", [0.010, 0.020, 0.030])
        await sampler.latest()
        await sampler.latest()  # nothing consumed meanwhile
        return sampler

    points = [p["services"]["agent"] for p in asyncio.run(run()).points()]
    assert [p["latency_p50_ms"] for p in points] == [None, 20.0, None]
    assert [p["latency_p99_ms"] for p in points] == [None, 30.0, None]
    assert points[0]["published_rate"] is None  # no earlier sample
    assert points[1]["published_rate"] > 0 and points[1]["consume_rate"] > 0
    assert points[2]["published_rate"] == 0 and points[2]["consume_rate"] == 0
    assert all("publish_rate" not in p for p in points)
