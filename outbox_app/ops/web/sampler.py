"""Recent stats samples, for the dashboard's live charts.

A sample is taken only when someone asks (a dashboard poll, a stats request, a
Prometheus scrape), at most about once a second however many ask, so an unwatched
worker costs the database nothing. Rates come from successive samples: consumed rows
per second, and rows that reached the broker (published, i.e. sent by the relay, plus
consumed) per second. Both are database-wide, so every worker's dashboard shows the
same numbers. The end-to-end latency percentiles are not: they are of the events this
worker's consumers handled since the previous sample.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

KEEP_S = 15 * 60.0
MAX_SAMPLES = 3000
MAX_GAP_S = 30.0  # a rate averaged over a longer gap would misrepresent the moment

StatsDoc = dict[str, Any]
Percentiles = tuple[float | None, float | None]  # p50, p99 in ms


@dataclass(frozen=True)
class Sample:
    t: float  # wall clock (epoch seconds): what the browser plots
    mono: float  # monotonic: what decides freshness
    stats: StatsDoc
    latency: dict[str, Percentiles] = field(default_factory=dict)


class StatsSampler:
    def __init__(
        self,
        take: Callable[[], Awaitable[StatsDoc]],
        on_sample: Callable[[StatsDoc], None] | None = None,
        latencies: Callable[[], dict[str, list[float]]] | None = None,
    ) -> None:
        self._take = take
        self._on_sample = on_sample
        self._latencies = latencies
        self._samples: deque[Sample] = deque(maxlen=MAX_SAMPLES)
        self._lock = asyncio.Lock()

    async def latest(self, max_age_s: float = 0.0) -> Sample:
        """A sample taken at most ``max_age_s`` before this call; callers arriving
        while one is being taken share it instead of querying again."""
        wanted_after = time.monotonic() - max_age_s
        async with self._lock:
            if self._samples and self._samples[-1].mono >= wanted_after:
                return self._samples[-1]
            stats = await self._take()
            # Taken with the counts (not before the query): what was consumed up to now.
            taken = self._latencies() if self._latencies is not None else {}
            latency = {s: percentiles(taken.get(s, [])) for s in stats["services"]}
            sample = Sample(time.time(), time.monotonic(), stats, latency)
            self._samples.append(sample)
            while self._samples and sample.mono - self._samples[0].mono > KEEP_S:
                self._samples.popleft()
        if self._on_sample is not None:
            self._on_sample(stats)
        return sample

    def points(self, since: float = 0.0) -> list[dict[str, Any]]:
        """Samples newer than ``since`` (epoch seconds), each with its rates."""
        out: list[dict[str, Any]] = []
        previous: Sample | None = None
        for sample in self._samples:
            t = round(sample.t, 3)  # as sent: a client's ``since`` is a time it was sent
            if t > since:
                out.append({"t": t, "services": _point(previous, sample)})
            previous = sample
        return out


def percentiles(latencies_s: list[float]) -> Percentiles:
    """p50 and p99 (nearest rank) in milliseconds; None when nothing was consumed."""
    if not latencies_s:
        return None, None
    ordered = sorted(latencies_s)

    def rank(q: float) -> float:
        return round(ordered[max(0, math.ceil(q * len(ordered)) - 1)] * 1000.0, 1)

    return rank(0.50), rank(0.99)


def _point(before: Sample | None, now: Sample) -> dict[str, Any]:
    services: dict[str, Any] = {}
    dt = None if before is None else now.mono - before.mono
    for name, counts in now.stats["services"].items():
        point = dict(counts)
        old = None if before is None else before.stats["services"].get(name)
        p50, p99 = now.latency.get(name, (None, None))
        if old is None or dt is None or not 0 < dt <= MAX_GAP_S:
            # Latencies gathered over a long gap belong to no moment of the chart either.
            point["published_rate"] = point["consume_rate"] = None
            point["latency_p50_ms"] = point["latency_p99_ms"] = None
        else:
            # A purge removes consumed rows, a requeue revives dead ones: a drop is not
            # negative throughput, so clamp at zero.
            reached = counts["published"] + counts["consumed"]
            point["published_rate"] = round(
                max(0, reached - old["published"] - old["consumed"]) / dt, 2
            )
            point["consume_rate"] = round(max(0, counts["consumed"] - old["consumed"]) / dt, 2)
            point["latency_p50_ms"], point["latency_p99_ms"] = p50, p99
        services[name] = point
    return services
