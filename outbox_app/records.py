"""The outbox row as a frozen record, and its status."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple


class Status(enum.StrEnum):
    PENDING = "pending"
    PUBLISHED = "published"
    CONSUMED = "consumed"
    DEAD = "dead"
    # Ordered services only: waiting behind an unfinished earlier row of its key, and
    # an operator's "go on without it" for a dead one.
    PARKED = "parked"
    SKIPPED = "skipped"


# States a row can still leave by itself (dead and skipped ones need an operator).
LIVE = (Status.PENDING.value, Status.PUBLISHED.value, Status.PARKED.value)
# States that hold back the later rows of an ordered key.
UNFINISHED = (*LIVE, Status.DEAD.value)


@dataclass(frozen=True)
class OutboxRow:
    id: int
    event_type: str
    service_name: str
    topic: str
    message_key: str | None
    payload: str
    status: Status
    retry_count: int
    max_retry: int
    next_retry_at: datetime | None
    last_error: str | None
    traceparent: str | None
    published_at: datetime | None
    consumed_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: Any) -> OutboxRow:
        """From a row of ``select(table)``, whose columns are in this record's order."""
        values = list(row)
        values[6] = Status(values[6])
        return cls(*values)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            out[name] = value.isoformat() + "Z" if isinstance(value, datetime) else value
        out["status"] = self.status.value
        return out


class Delivery(NamedTuple):
    """The columns of a row that the relay and the consumer need: fetching and parsing
    nine columns instead of sixteen (five of them timestamps) is most of a claim's cost.
    A named tuple, not a frozen dataclass: two are built per event (claim and lock), and
    the dataclass's per-field ``object.__setattr__`` made that 6 % of a worker's GIL
    time in a py-spy profile (2.35 us a row; 0.65 us now)."""

    id: int
    event_type: str
    service_name: str
    message_key: str | None
    payload: str
    status: Status
    retry_count: int
    created_at: datetime
    traceparent: str | None
    # Selected by the consumer's lock only:
    max_retry: int = 20
    started: bool = False  # an attempt was counted when it started and never finished

    @classmethod
    def from_row(cls, row: Any) -> Delivery:
        """From a row selected with ``DELIVERY_COLUMNS`` (and, for the consumer, the two
        extra columns), in that order."""
        values = list(row)
        status = values[5]
        values[5] = _STATUSES.get(status) or Status(status)  # Status() names a bad value
        if len(values) > 10:
            values[10] = bool(values[10])
        return cls(*values)


_STATUSES = {s.value: s for s in Status}
DELIVERY_COLUMNS = Delivery._fields[:9]
