"""Service ``agent``: chat history written asynchronously from the chat path."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import BigInteger, Column, MetaData, String, Table, Text

from outbox_app import HandlerContext, PermanentFailure, default_registry, handler
from outbox_app.schema import Id, Timestamp


def utc_now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


metadata = default_registry.add_metadata(MetaData())

chat_history = Table(
    "chat_history",
    metadata,
    Column("id", Id, primary_key=True),
    Column("outbox_id", BigInteger, nullable=False, index=True),  # the event that wrote it
    Column("user_id", BigInteger, nullable=False),
    Column("conversation_id", String(64), nullable=False, index=True),
    Column("role", String(16), nullable=False),
    Column("message", Text, nullable=False),
    Column("created_at", Timestamp, nullable=False, default=utc_now),
)


ROLES = ("user", "assistant", "system", "tool")


@dataclass
class ChatHistoryPersist:
    user_id: int
    conversation_id: str
    role: str
    message: str


@handler("chat_history.persist", service="agent", payload=ChatHistoryPersist)
def persist_chat_history(ctx: HandlerContext) -> None:
    p: ChatHistoryPersist = ctx.payload
    if p.role not in ROLES:
        raise PermanentFailure(f"field 'role' must be one of {', '.join(ROLES)}, got {p.role!r}")
    ctx.insert(  # batched with the other events of the consumer's batch
        chat_history,
        outbox_id=ctx.event.outbox_id,
        user_id=p.user_id,
        conversation_id=p.conversation_id,
        role=p.role,
        message=p.message,
    )
