"""The partition assignor: Faust's, with a way out of its sticky bookkeeping.

Faust's assignor keeps each member's previous partitions (sticky assignment) and checks
its bookkeeping with asserts. When the previous assignments no longer fit the cluster
(seen after a broker restart that lost topics and groups), an assert fails inside the
group leader's rebalance; aiokafka hands the error to the consumer, Faust's fetcher
crashes and the worker exits (found by the soak). Stickiness only saves work, so when
the sticky pass fails, the partitions are assigned afresh, as to new members.
"""

from __future__ import annotations

import logging
from typing import Any

from faust.assignor import PartitionAssignor
from faust.assignor.client_assignment import ClientAssignment

log = logging.getLogger(__name__)


class OutboxAssignor(PartitionAssignor):  # type: ignore[misc]
    def _perform_assignment(self, cluster: Any, member_metadata: Any) -> Any:
        try:
            return super()._perform_assignment(cluster, member_metadata)
        except AssertionError:
            log.warning(
                "partition assignment: the members' previous assignments do not fit the "
                "cluster any more; assigning every partition afresh",
                exc_info=True,
            )
        return super()._perform_assignment(cluster, self._without_history(member_metadata))

    def _without_history(self, member_metadata: Any) -> dict[str, Any]:
        """The members' metadata as if none of them had partitions before."""
        fresh = {}
        for member_id, metadata in member_metadata.items():
            client = self._get_client_metadata(metadata)
            client.assignment = ClientAssignment(actives={}, standbys={})
            fresh[member_id] = type(metadata)(
                metadata.version, metadata.subscription, client.dumps()
            )
        return fresh
