"""The read-only queries operators run (counts, listings), apart from the state machine
in ``outbox_app.store``. Blocking, like the store."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, func, select

from outbox_app.clock import utcnow
from outbox_app.ops.signatures import DeadRef
from outbox_app.records import OutboxRow, Status
from outbox_app.routing import Route
from outbox_app.schema import outbox_table
from outbox_app.store import as_datetime


@dataclass(frozen=True)
class ServiceCounts:
    pending: int = 0
    published: int = 0
    consumed: int = 0
    dead: int = 0
    parked: int = 0
    skipped: int = 0
    oldest_pending_age_s: float | None = None
    # ordered services: keys whose later rows wait, and how long the oldest has waited
    blocked_keys: int = 0
    oldest_blocked_age_s: float | None = None
    ordered: bool = False

    def as_dict(self) -> dict[str, Any]:
        """The stats document of a service; an ordered one adds its parked and skipped rows
        and its blocked keys."""
        doc: dict[str, Any] = {
            "pending": self.pending,
            "published": self.published,
            "consumed": self.consumed,
            "dead": self.dead,
            "oldest_pending_age_s": self.oldest_pending_age_s,
        }
        if self.ordered:
            doc.update(
                parked=self.parked,
                skipped=self.skipped,
                blocked_keys=self.blocked_keys,
                oldest_blocked_age_s=self.oldest_blocked_age_s,
            )
        return doc


class OutboxQueries:
    def __init__(self, engine: Engine, route: Route) -> None:
        self.engine = engine
        self.route = route
        self.table = outbox_table(route)

    def counts(self) -> ServiceCounts:
        t = self.table
        blocked: tuple[Any, ...] = (0, None)
        with self.engine.connect() as conn:
            now = conn.execute(select(utcnow())).scalar_one()
            rows = conn.execute(
                select(t.c.status, func.count(), func.min(t.c.created_at)).group_by(t.c.status)
            ).all()
            if self.route.ordered:
                blocked = tuple(
                    conn.execute(
                        select(
                            func.count(func.distinct(t.c.message_key)), func.min(t.c.updated_at)
                        ).where(t.c.status == Status.PARKED.value)
                    ).one()
                )
        by_status = {status: (n, oldest) for status, n, oldest in rows}
        return ServiceCounts(
            **{s.value: int(by_status.get(s.value, (0, None))[0]) for s in Status},
            oldest_pending_age_s=_age(now, by_status.get(Status.PENDING.value, (0, None))[1]),
            blocked_keys=int(blocked[0] or 0),
            oldest_blocked_age_s=_age(now, blocked[1]),
            ordered=self.route.ordered,
        )

    def list_by_status(
        self,
        status: Status,
        *,
        limit: int = 50,
        offset: int = 0,
        event_type: str | None = None,
    ) -> list[OutboxRow]:
        t = self.table
        query = select(t).where(t.c.status == status.value)
        if event_type is not None:
            query = query.where(t.c.event_type == event_type)
        query = query.order_by(t.c.updated_at.desc(), t.c.id.desc()).limit(limit).offset(offset)
        with self.engine.connect() as conn:
            return [OutboxRow.from_row(r) for r in conn.execute(query).all()]

    def newest_dead(self, limit: int) -> list[DeadRef]:
        """The newest dead rows, without their payloads (what failure grouping reads)."""
        t = self.table
        query = (
            select(t.c.id, t.c.event_type, t.c.last_error, t.c.updated_at)
            .where(t.c.status == Status.DEAD.value)
            .order_by(t.c.updated_at.desc(), t.c.id.desc())
            .limit(limit)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [DeadRef(int(i), et, err, as_datetime(at)) for i, et, err, at in rows]

    def statuses(self, ids: Sequence[int]) -> dict[int, Status]:
        """The status of each of these rows that exists."""
        t = self.table
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.c.id, t.c.status).where(t.c.id.in_(list(ids)))).all()
        return {int(i): Status(st) for i, st in rows}


def _age(now: Any, then: Any) -> float | None:
    if then is None:
        return None
    return round(max(0.0, (as_datetime(now) - as_datetime(then)).total_seconds()), 3)
