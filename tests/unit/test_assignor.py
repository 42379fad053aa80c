"""The partition assignor (found by the soak: after a broker restart, Faust's sticky
assignment failed an assert in the group leader and the worker exited with code 1)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka.coordinator.protocol import ConsumerProtocolMemberMetadata
from faust.assignor import PartitionAssignor
from faust.assignor.client_assignment import ClientAssignment, ClientMetadata

from outbox_app.worker.app import OutboxApp
from outbox_app.worker.compat.assignor import OutboxAssignor
from tests.support import one_service_app

TOPIC = "outbox.agent"


@pytest.fixture
def app(tmp_path: Path) -> Iterator[OutboxApp]:
    built = one_service_app(tmp_path)
    try:
        yield built
    finally:
        built.runtime.close()


class Cluster:
    """The leader's view: the topic has 4 partitions."""

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        return {0, 1, 2, 3} if topic == TOPIC else None

    def topics(self) -> set[str]:
        return {TOPIC}


def member(previous: list[int]) -> Any:
    """A member that held ``previous`` partitions of the topic before the rebalance."""
    metadata = ClientMetadata(
        assignment=ClientAssignment(actives={TOPIC: previous}, standbys={}),
        url="http://127.0.0.1:6066",
        changelog_distribution={},
    )
    return ConsumerProtocolMemberMetadata(0, [TOPIC], metadata.dumps())


def test_workers_use_it(app: OutboxApp) -> None:
    assert isinstance(app.assignor, OutboxAssignor)


def test_previous_assignments_that_no_longer_fit_are_dropped(app: OutboxApp) -> None:
    # The member remembers a partition the topic no longer has (the broker lost it).
    members = {"a": member([0, 1, 7]), "b": member([2, 3])}
    with pytest.raises(AssertionError):  # the trap: Faust's own assignor
        PartitionAssignor(app, replicas=0)._perform_assignment(Cluster(), members)
    result = OutboxAssignor(app, replicas=0)._perform_assignment(Cluster(), members)
    assigned = sorted(p for a in result.values() for _, parts in a.assignment for p in parts)
    assert assigned == [0, 1, 2, 3]  # every partition once, none twice
    assert all(len(a.assignment[0][1]) == 2 for a in result.values())


def test_fitting_previous_assignments_are_kept(app: OutboxApp) -> None:
    members = {"a": member([0, 1]), "b": member([2, 3])}
    result = OutboxAssignor(app, replicas=0)._perform_assignment(Cluster(), members)
    assert {m: sorted(a.assignment[0][1]) for m, a in result.items()} == {
        "a": [0, 1],
        "b": [2, 3],
    }
