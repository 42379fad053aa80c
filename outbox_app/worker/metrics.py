"""Prometheus metrics of one worker, in a registry of its own (served at /metrics), and
the recent end-to-end latencies its consumers saw (for the dashboard's percentiles)."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
RECENT_LATENCIES = 10_000  # per service: an unwatched worker keeps only the newest


class LatencyWindow:
    """End-to-end latencies (seconds) consumed since the dashboard's sampler last took
    them, per service. A histogram's buckets are too coarse for a p99 over one second;
    these are exact. Bounded, so a worker nobody watches does not grow."""

    def __init__(self, keep: int = RECENT_LATENCIES) -> None:
        self._keep = keep
        self._by_service: dict[str, deque[float]] = {}

    def add(self, service: str, latencies: Iterable[float]) -> None:
        window = self._by_service.get(service)
        if window is None:
            window = self._by_service[service] = deque(maxlen=self._keep)
        window.extend(latencies)

    def take(self) -> dict[str, list[float]]:
        """What was added since the last call, per service; the window starts empty again."""
        taken = {s: list(w) for s, w in self._by_service.items() if w}
        for window in self._by_service.values():
            window.clear()
        return taken


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.rows = Gauge(
            "outbox_rows", "Outbox rows by service and status", ["service", "status"], registry=r
        )
        self.oldest_pending = Gauge(
            "outbox_oldest_pending_age_seconds",
            "Age of the oldest pending row",
            ["service"],
            registry=r,
        )
        self.published = Counter(
            "outbox_published", "Rows published to Kafka", ["service"], registry=r
        )
        self.publish_failures = Counter(
            "outbox_publish_failures", "Rows whose publish failed", ["service"], registry=r
        )
        self.consumed = Counter(
            "outbox_consumed", "Rows consumed by their handler", ["service"], registry=r
        )
        self.handler_failures = Counter(
            "outbox_handler_failures", "Failed handler attempts", ["service"], registry=r
        )
        self.dead = Counter("outbox_dead", "Rows that went dead", ["service"], registry=r)
        self.duplicates = Counter(
            "outbox_duplicates", "Deliveries of rows already finished", ["service"], registry=r
        )
        self.poison = Counter(
            "outbox_poison_records",
            "Records that were not valid envelopes",
            ["service"],
            registry=r,
        )
        self.recovered = Counter(
            "outbox_stale_recovered", "Published rows returned to pending", ["service"], registry=r
        )
        self.purged = Counter("outbox_purged", "Consumed rows purged", ["service"], registry=r)
        self.blocked_keys = Gauge(
            "outbox_blocked_keys",
            "Ordered services: keys whose later rows wait for an unfinished head",
            ["service"],
            registry=r,
        )
        self.oldest_blocked = Gauge(
            "outbox_oldest_blocked_age_seconds",
            "Ordered services: how long the longest-waiting parked row has waited",
            ["service"],
            registry=r,
        )
        self.parked = Counter(
            "outbox_parked",
            "Rows parked behind an earlier row of their key",
            ["service"],
            registry=r,
        )
        self.relay_paused = Gauge(
            "outbox_relay_paused",
            "1 while the relay is paused because the broker or the database is down",
            ["service"],
            registry=r,
        )
        self.dependency_up = Gauge(
            "outbox_dependency_up",
            "1 while the broker / the database answers this worker",
            ["dependency"],
            registry=r,
        )
        self.relay_batch = Histogram(
            "outbox_relay_batch_size",
            "Rows per relay claim",
            ["service"],
            buckets=(1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500),
            registry=r,
        )
        self.publish_latency = Histogram(
            "outbox_publish_latency_seconds",
            "Time from claim to broker acks for a relay batch",
            ["service"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.consumer_lag = Gauge(
            "outbox_consumer_lag",
            "Records of a service topic's partition not yet committed by this worker's "
            "consumer group (the broker's high-water mark minus the committed offset)",
            ["service", "partition"],
            registry=r,
        )
        self.recent_end_to_end = LatencyWindow()
        self.end_to_end = Histogram(
            "outbox_end_to_end_latency_seconds",
            "Time from the row's creation to its handler's commit",
            ["service"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
