"""Which deliveries count their attempt before the handler runs (``redelivery.py``), and
the worker app telling it of Faust's rebalances."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from faust.types import TP

from outbox_app.redelivery import Redeliveries
from tests.support import one_service_app

T0 = datetime(2026, 12, 3, 12, 0, 0)


def test_before_the_first_assignment_every_delivery_is_a_suspect() -> None:
    r = Redeliveries(5.0)
    assert r.suspect(T0 + timedelta(days=1), started=False)


def test_rows_created_after_the_assignment_are_first_deliveries_however_old() -> None:
    r = Redeliveries(0.0)
    r.assigned(T0)
    assert not r.suspect(T0 + timedelta(seconds=1), started=False)
    # An hour-old row of a backlog, created after the assignment: its first delivery.
    r.assigned(T0 - timedelta(hours=2))
    assert not r.suspect(T0 - timedelta(hours=1), started=False)


def test_rows_created_before_the_assignment_or_within_the_skew_are_suspects() -> None:
    r = Redeliveries(5.0)
    r.assigned(T0)
    assert r.suspect(T0 - timedelta(seconds=1), started=False)
    assert r.suspect(T0 + timedelta(seconds=4), started=False)  # the database's clock ahead
    assert not r.suspect(T0 + timedelta(seconds=6), started=False)


def test_an_unfinished_start_is_always_a_suspect() -> None:
    r = Redeliveries(0.0)
    r.assigned(T0)
    assert r.suspect(T0 + timedelta(hours=1), started=True)
    assert Redeliveries.since(datetime.min).suspect(T0, started=True)
    assert not Redeliveries.since(datetime.min).suspect(T0, started=False)


def test_a_rebalance_makes_every_delivery_a_suspect_until_the_new_assignment() -> None:
    r = Redeliveries(0.0)
    r.assigned(T0)
    r.rebalancing()
    assert r.suspect(T0 + timedelta(hours=1), started=False)
    r.assigned(T0 + timedelta(hours=2))
    assert not r.suspect(T0 + timedelta(hours=3), started=False)


def test_the_worker_app_follows_fausts_rebalance_signals(tmp_path: Path) -> None:
    """Faust's public signals, as the worker connects them: if their names or calling
    convention change upstream, this fails instead of every delivery staying a suspect."""
    app = one_service_app(tmp_path)
    try:
        seen = app.runtime.redeliveries
        later = datetime.now(UTC).replace(tzinfo=None) + timedelta(hours=1)
        assert seen.suspect(later, started=False)  # no assignment yet
        asyncio.run(app.on_partitions_assigned.send({TP("outbox.agent", 0)}))
        assert not seen.suspect(later, started=False)
        asyncio.run(app.on_partitions_revoked.send({TP("outbox.agent", 0)}))
        assert seen.suspect(later, started=False)
    finally:
        app.runtime.close()
