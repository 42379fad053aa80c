"""``/metrics``: the worker's Prometheus registry, with the row gauges refreshed from
the database at scrape time (counters and histograms are kept as events happen)."""

from __future__ import annotations

from typing import Any

from prometheus_client.exposition import choose_encoder

from outbox_app.records import Status
from outbox_app.worker.health import Health
from outbox_app.worker.lag import LagReport
from outbox_app.worker.metrics import Metrics


def prime(metrics: Metrics, services: list[str]) -> None:
    """Create each served service's series at zero, so a scrape shows them before their
    first event and ``rate()`` does not miss the first increments."""
    per_service = (
        metrics.published,
        metrics.publish_failures,
        metrics.consumed,
        metrics.handler_failures,
        metrics.dead,
        metrics.duplicates,
        metrics.poison,
        metrics.recovered,
        metrics.purged,
        metrics.parked,
        metrics.relay_batch,
        metrics.publish_latency,
        metrics.end_to_end,
    )
    for service in services:
        for metric in per_service:
            metric.labels(service)
        metrics.relay_paused.labels(service).set(0)


def update_health(metrics: Metrics, health: Health) -> None:
    for dependency in health.dependencies():
        metrics.dependency_up.labels(dependency.name).set(1 if dependency.up else 0)


def update_gauges(metrics: Metrics, stats: dict[str, Any]) -> None:
    for service, counts in stats["services"].items():
        for status in Status:
            if status.value in counts:
                metrics.rows.labels(service, status.value).set(counts[status.value])
        age = counts["oldest_pending_age_s"]
        metrics.oldest_pending.labels(service).set(0.0 if age is None else age)
        if "blocked_keys" in counts:
            metrics.blocked_keys.labels(service).set(counts["blocked_keys"])
            blocked = counts["oldest_blocked_age_s"]
            metrics.oldest_blocked.labels(service).set(0.0 if blocked is None else blocked)


def update_lag(metrics: Metrics, report: LagReport) -> None:
    """The lag gauges from a fresh broker answer, and none while it is stale: as with the
    row gauges, an absent series makes an alert fire, an old number would not."""
    metrics.consumer_lag.clear()
    if report.stale or report.snapshot is None:
        return
    for service, lag in report.snapshot.services.items():
        for p in lag.partitions:
            metrics.consumer_lag.labels(service, str(p.partition)).set(p.lag)


def forget_gauges(metrics: Metrics) -> None:
    """Drop the row gauges when the database cannot be read: absent series make
    alerts fire, stale numbers would quietly claim all is well."""
    metrics.rows.clear()
    metrics.oldest_pending.clear()
    metrics.blocked_keys.clear()
    metrics.oldest_blocked.clear()


def render(metrics: Metrics, accept: str | None) -> tuple[bytes, str]:
    """The exposition the scraper asked for (``Accept``): OpenMetrics or Prometheus text."""
    encode, content_type = choose_encoder(accept or "")
    return encode(metrics.registry), content_type
