"""Service ``task``: tasks created and completed; completion asks for a notification,
published atomically with the task's update."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import BigInteger, Column, MetaData, String, Table, insert, select, update

from outbox_app import HandlerContext, PermanentFailure, default_registry, handler
from outbox_app.clock import utcnow
from outbox_app.schema import Timestamp

metadata = default_registry.add_metadata(MetaData())

tasks = Table(
    "tasks",
    metadata,
    Column("task_id", String(128), primary_key=True),
    Column("user_id", BigInteger, nullable=False, index=True),
    Column("title", String(255), nullable=False),
    Column("status", String(16), nullable=False),
    Column("due_at", String(40), nullable=True),
    Column("created_by_outbox_id", BigInteger, nullable=False),
    Column("completed_by_outbox_id", BigInteger, nullable=True),
    Column("created_at", Timestamp, nullable=False),
    Column("completed_at", Timestamp, nullable=True),
)


@dataclass
class TaskCreated:
    task_id: str
    user_id: int
    title: str
    due_at: str | None = None


@dataclass
class TaskCompleted:
    task_id: str
    user_id: int
    notify: bool = True


@handler("task.created", service="task", payload=TaskCreated)
def create_task(ctx: HandlerContext) -> None:
    p: TaskCreated = ctx.payload
    existing = ctx.session.execute(
        select(tasks.c.created_by_outbox_id).where(tasks.c.task_id == p.task_id)
    ).scalar_one_or_none()
    if existing is not None:
        raise PermanentFailure(
            f"task {p.task_id!r} already exists (created by outbox id {existing})"
        )
    ctx.session.execute(
        insert(tasks).values(
            task_id=p.task_id,
            user_id=p.user_id,
            title=p.title,
            status="open",
            due_at=p.due_at,
            created_by_outbox_id=ctx.event.outbox_id,
            created_at=utcnow(),
        )
    )


@handler("task.completed", service="task", payload=TaskCompleted)
def complete_task(ctx: HandlerContext) -> None:
    p: TaskCompleted = ctx.payload
    row = ctx.session.execute(
        select(tasks.c.status, tasks.c.title).where(tasks.c.task_id == p.task_id).with_for_update()
    ).first()
    if row is None:
        # Its task.created may still be on its way (a retry can overtake): try again later.
        raise LookupError(f"task {p.task_id!r} does not exist (yet)")
    if row.status == "done":
        return
    ctx.session.execute(
        update(tasks)
        .where(tasks.c.task_id == p.task_id)
        .values(status="done", completed_by_outbox_id=ctx.event.outbox_id, completed_at=utcnow())
    )
    if p.notify:
        ctx.publish(
            "notification.requested",
            {
                "user_id": p.user_id,
                "channel": "webhook",
                "title": "Task completed",
                "body": f"{row.title} is done.",
            },
            key=str(p.user_id),
        )
