"""Service ``memory``: a per-user key/value memory, upserted."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import BigInteger, Column, Integer, MetaData, String, Table, Text, UniqueConstraint
from sqlalchemy.dialects.mysql import insert as mysql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from outbox_app import HandlerContext, default_registry, handler
from outbox_app.clock import utcnow
from outbox_app.schema import Id, Timestamp

metadata = default_registry.add_metadata(MetaData())

memories = Table(
    "memories",
    metadata,
    Column("id", Id, primary_key=True),
    Column("user_id", BigInteger, nullable=False),
    Column("mkey", String(191), nullable=False),
    Column("value", Text, nullable=False),
    Column("version", Integer, nullable=False),
    Column("last_outbox_id", BigInteger, nullable=False),
    Column("updated_at", Timestamp, nullable=False),
    UniqueConstraint("user_id", "mkey", name="uq_memories_user_key"),
)


@dataclass
class MemoryUpsert:
    user_id: int
    key: str
    value: str


@handler("memory.upsert", service="memory", payload=MemoryUpsert)
def upsert_memory(ctx: HandlerContext) -> None:
    p: MemoryUpsert = ctx.payload
    values = {
        "user_id": p.user_id,
        "mkey": p.key,
        "value": p.value,
        "version": 1,
        "last_outbox_id": ctx.event.outbox_id,
        "updated_at": utcnow(),
    }
    changes = {
        "value": p.value,
        "version": memories.c.version + 1,
        "last_outbox_id": ctx.event.outbox_id,
        "updated_at": utcnow(),
    }
    if ctx.session.get_bind().dialect.name == "sqlite":
        stmt = sqlite_insert(memories).values(values)
        stmt = stmt.on_conflict_do_update(index_elements=["user_id", "mkey"], set_=changes)
        ctx.session.execute(stmt)
    else:
        ctx.session.execute(mysql_insert(memories).values(values).on_duplicate_key_update(changes))
