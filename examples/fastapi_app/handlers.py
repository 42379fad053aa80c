"""The example's handler module (service ``shop``): confirms each placed order exactly once.
Workers load it with ``OUTBOX_HANDLER_MODULES=examples.fastapi_app.handlers``; the web app
imports it too, so that ``apublish()`` knows the event type."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import BigInteger, Column, Integer, MetaData, String, Table

from outbox_app import HandlerContext, default_registry, handler
from outbox_app.schema import Id, Timestamp

metadata = default_registry.add_metadata(MetaData())

# The web app's business table: written in the same transaction as the event.
orders = Table(
    "orders",
    metadata,
    Column("id", Id, primary_key=True),
    Column("customer", String(64), nullable=False),
    Column("items", Integer, nullable=False),
    Column("created_at", Timestamp, nullable=False),
)

# The handler's effect: one confirmation per order, written with the outbox row's update.
order_confirmations = Table(
    "order_confirmations",
    metadata,
    Column("id", Id, primary_key=True),
    Column("order_id", BigInteger, nullable=False, unique=True),
    Column("outbox_id", BigInteger, nullable=False),
    Column("customer", String(64), nullable=False),
)


@dataclass
class OrderPlaced:
    order_id: int
    customer: str
    items: int


@handler("order.placed", service="shop", payload=OrderPlaced)
def confirm_order(ctx: HandlerContext) -> None:
    p: OrderPlaced = ctx.payload
    ctx.insert(
        order_confirmations,
        order_id=p.order_id,
        outbox_id=ctx.event.outbox_id,
        customer=p.customer,
    )
