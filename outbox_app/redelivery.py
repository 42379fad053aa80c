"""Which deliveries may follow a worker crash caused by the very event they carry.

A worker that dies while a handler runs rolls the handler's transaction back, and the
event comes again, from the broker (the offset was not committed) or from the relay (the
row was not consumed), to whichever worker owns its partition next. That worker got the
partition in a rebalance after the crash, and aiokafka's rebalances are eager: every
member's assignment is renewed, not only the moved partitions'. So a row created after
this worker was last assigned its partitions had its first delivery here, and this
process is alive: only rows created before that moment, or whose attempt started and
never finished, can be a crash's redelivery. Those count their attempt before the
handler runs (``handling.py``).

This replaces counting by age ("older than 5 s"), which made every event of a backlog pay
an extra commit, so that a consumer that fell behind became slower than one that had not.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


class Redeliveries:
    """Until the first assignment, and during a rebalance, every delivery is a suspect.
    ``skew_s`` widens the window by the clock difference allowed between the workers and
    the database: ``created_at`` is the database's clock, the assignment this worker's."""

    def __init__(self, skew_s: float) -> None:
        self.skew = timedelta(seconds=skew_s)
        self._first_here: datetime | None = None  # rows created from then on

    @classmethod
    def since(cls, moment: datetime) -> Redeliveries:
        """Rows created from ``moment`` on are first deliveries (the testing helpers,
        which run no worker and see no crash, pass ``datetime.min``)."""
        out = cls(0.0)
        out._first_here = moment
        return out

    def rebalancing(self) -> None:
        """Partitions were revoked: until the new assignment, every delivery is a suspect
        (records already fetched, or any that flow before the assignment is noted)."""
        self._first_here = None

    def assigned(self, now: datetime | None = None) -> None:
        """This worker was (re)assigned its partitions: rows created until now may have
        been delivered to a worker that died."""
        now = now or datetime.now(UTC).replace(tzinfo=None)
        self._first_here = now + self.skew

    def suspect(self, created_at: datetime, started: bool) -> bool:
        """Whether a delivery of this row may follow a crash that its handler caused."""
        return started or self._first_here is None or created_at < self._first_here
