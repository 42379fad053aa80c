"""The statements on the hot paths (publish, relay round, consumed batch), built once
per outbox table.

Building a Core statement and computing its cache key costs more Python time than
the database spends running it; a prebuilt statement keeps its cache key. ``ids``
expands to a batch's ids at execution, ``token`` is a claim's lease deadline.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Insert, Select, Table, Update, bindparam, func, insert, select, update
from sqlalchemy.sql.elements import BindParameter

from outbox_app.clock import db_time, utcnow
from outbox_app.records import DELIVERY_COLUMNS, LIVE, Status

# ``last_error`` of a row whose attempt was counted when its handler started: it stays
# there only if the worker stopped before the attempt had an outcome.
STARTED_ERROR = "handler started; the worker stopped before it finished"


@dataclass
class HotStatements:
    table: Table
    add: Insert
    claim_lease: Update
    mark_published: Update
    release: Update
    lock: Select[Any]
    mark_started: Update
    mark_consumed: Update
    mark_consumed_started: Update
    release_parked: Update
    _claims: dict[tuple[int, float], Select[Any]] = field(default_factory=dict)

    def claim(self, limit: int, lease_s: float) -> Select[Any]:
        """Due pending rows, locked and skipped by other relays, with the lease deadline
        selected alongside (one round trip fewer than asking the clock apart)."""
        stmt = self._claims.get((limit, lease_s))
        if stmt is None:
            t = self.table
            columns = [*delivery_columns(t), db_time(lease_s).label("lease_until")]
            stmt = self._claims[(limit, lease_s)] = (
                select(*columns)
                .where(t.c.status == Status.PENDING.value, t.c.next_retry_at <= utcnow())
                .order_by(t.c.next_retry_at, t.c.id)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
        return stmt


def consumed(t: Table, ids: BindParameter[Any], retry_count: Any) -> Update:
    return (
        update(t)
        .where(t.c.id.in_(ids), t.c.status.in_(LIVE))
        .values(
            status=Status.CONSUMED.value,
            consumed_at=utcnow(),
            next_retry_at=None,
            last_error=None,
            retry_count=retry_count,
            updated_at=utcnow(),
        )
    )


def delivery_columns(table: Table) -> list[Any]:
    return [table.c[name] for name in DELIVERY_COLUMNS]


_built: dict[Table, HotStatements] = {}
_inserts: dict[Table, Insert] = {}


def insert_of(table: Table) -> Insert:
    """The plain insert of a handler's table (``ctx.insert``), built once per table."""
    stmt = _inserts.get(table)
    if stmt is None:
        stmt = _inserts[table] = insert(table)
    return stmt


def hot_statements(t: Table) -> HotStatements:
    built = _built.get(t)
    if built is not None:
        return built
    # A batch's ids are rendered into the statement as integers when it runs: passed as
    # parameters, each one went through SQLAlchemy's and then mysqlclient's quoting (about
    # 10 % of a consume transaction's Python calls at 100 events).
    ids: BindParameter[Any] = bindparam("ids", expanding=True, literal_execute=True)
    built = _built[t] = HotStatements(
        table=t,
        add=insert(t).values(
            event_type=bindparam("event_type"),
            service_name=bindparam("service_name"),
            topic=bindparam("topic"),
            message_key=bindparam("message_key"),
            payload=bindparam("payload"),
            status=Status.PENDING.value,
            retry_count=0,
            max_retry=bindparam("max_retry"),
            next_retry_at=utcnow(),
            traceparent=bindparam("traceparent"),
            created_at=utcnow(),
            updated_at=utcnow(),
        ),
        claim_lease=update(t)
        .where(t.c.id.in_(ids))
        .values(next_retry_at=bindparam("token"), updated_at=utcnow()),
        mark_published=update(t)
        .where(
            t.c.id.in_(ids),
            t.c.status == Status.PENDING.value,
            t.c.next_retry_at == bindparam("token"),
        )
        .values(
            status=Status.PUBLISHED.value,
            published_at=utcnow(),
            next_retry_at=None,
            updated_at=utcnow(),
        ),
        release=update(t)
        .where(
            t.c.id.in_(ids),
            t.c.status == Status.PENDING.value,
            t.c.next_retry_at == bindparam("token"),
        )
        .values(next_retry_at=utcnow(), updated_at=utcnow()),
        # Delivery columns, then what the consumer also needs: the attempt budget, and
        # whether an attempt that started earlier never finished.
        lock=select(
            *delivery_columns(t),
            t.c.max_retry,
            func.coalesce(t.c.last_error.like(STARTED_ERROR + "%"), False),
        )
        .where(t.c.id.in_(ids))
        .order_by(t.c.id)
        .with_for_update(),
        mark_started=update(t)
        .where(t.c.id.in_(ids), t.c.status.in_(LIVE))
        .values(retry_count=t.c.retry_count + 1, last_error=STARTED_ERROR, updated_at=utcnow()),
        mark_consumed=consumed(t, ids, t.c.retry_count),
        mark_consumed_started=consumed(t, ids, t.c.retry_count - 1),
        release_parked=update(t)
        .where(
            t.c.message_key.in_(bindparam("keys", expanding=True)),
            t.c.status == Status.PARKED.value,
        )
        .values(status=Status.PENDING.value, next_retry_at=utcnow(), updated_at=utcnow()),
    )
    return built
