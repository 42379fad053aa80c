"""Service ``active_scheduler``: a fired schedule publishes the tasks it asks for.

Each run is recorded once per (schedule, fire time); task ids derive from the run,
so the tasks of one firing are created once however often the event is delivered, and
once when the scheduler publishes the same firing twice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from sqlalchemy import BigInteger, Column, Integer, MetaData, String, Table, insert, select

from outbox_app import HandlerContext, PermanentFailure, default_registry, handler
from outbox_app.clock import utcnow
from outbox_app.schema import Id, Timestamp

log = logging.getLogger(__name__)

metadata = default_registry.add_metadata(MetaData())

schedule_runs = Table(
    "schedule_runs",
    metadata,
    Column("id", Id, primary_key=True),
    Column("run_key", String(191), nullable=False, unique=True),
    Column("schedule_id", String(128), nullable=False),
    Column("user_id", BigInteger, nullable=False),
    Column("task_count", Integer, nullable=False),
    Column("outbox_id", BigInteger, nullable=False),
    Column("created_at", Timestamp, nullable=False),
)

MAX_TASKS_PER_RUN = 100


@dataclass
class ScheduledTask:
    title: str
    due_at: str | None = None


@dataclass
class ScheduleTriggered:
    schedule_id: str
    user_id: int
    fired_at: str
    tasks: list[ScheduledTask] = field(default_factory=list)


@handler("schedule.triggered", service="active_scheduler", payload=ScheduleTriggered)
def run_schedule(ctx: HandlerContext) -> None:
    p: ScheduleTriggered = ctx.payload
    if len(p.tasks) > MAX_TASKS_PER_RUN:
        raise PermanentFailure(
            f"field 'tasks' has {len(p.tasks)} items, at most {MAX_TASKS_PER_RUN}"
        )
    run_key = f"{p.schedule_id}@{p.fired_at}"
    already = ctx.session.execute(
        select(schedule_runs.c.outbox_id).where(schedule_runs.c.run_key == run_key)
    ).scalar_one_or_none()
    if already is not None:
        # The same firing published twice (the scheduler retried its transaction): its
        # tasks exist already. A concurrent twin fails on the unique run_key and, on its
        # retry, ends here.
        log.info("schedule run %s already done by outbox id %s", run_key, already)
        return
    ctx.session.execute(
        insert(schedule_runs).values(
            run_key=run_key,
            schedule_id=p.schedule_id,
            user_id=p.user_id,
            task_count=len(p.tasks),
            outbox_id=ctx.event.outbox_id,
            created_at=utcnow(),
        )
    )
    for i, task in enumerate(p.tasks):
        ctx.publish(
            "task.created",
            {
                "task_id": f"{run_key}#{i}",
                "user_id": p.user_id,
                "title": task.title,
                "due_at": task.due_at,
            },
            key=str(p.user_id),
        )
