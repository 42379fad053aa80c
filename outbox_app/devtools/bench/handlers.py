"""The bench's ordered service (``bench_ordered``, per-key order on): the same work as the
chat history handler, so that its drain compares with the unordered one. Bench workers load
it with ``OUTBOX_HANDLER_MODULES=handlers,outbox_app.devtools.bench.handlers``."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, MetaData, String, Table, Text

from outbox_app.context import HandlerContext
from outbox_app.registry import default_registry, handler
from outbox_app.schema import Id

ORDERED_SERVICE = "bench_ordered"
ORDERED_EVENT = "bench.ordered"

metadata = default_registry.add_metadata(MetaData())
default_registry.add_service(ORDERED_SERVICE, ordering="key")

bench_ordered_effects = Table(
    "bench_ordered_effects",
    metadata,
    Column("id", Id, primary_key=True),
    Column("outbox_id", BigInteger, nullable=False, index=True),
    Column("conversation_id", String(64), nullable=False),
    Column("message", Text, nullable=False),
)


@handler(ORDERED_EVENT, service=ORDERED_SERVICE)
def record(ctx: HandlerContext) -> None:
    p = ctx.payload
    ctx.insert(
        bench_ordered_effects,
        outbox_id=ctx.event.outbox_id,
        conversation_id=p["conversation_id"],
        message=p["message"],
    )
