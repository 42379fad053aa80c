"""``uvicorn examples.fastapi_app.app:app``: one endpoint that writes a business row and
publishes its event in one transaction, through ``apublish()``.

Settings: ``EXAMPLE_DATABASE_URL`` (an async SQLAlchemy URL, e.g.
``mysql+asyncmy://user:pw@127.0.0.1:3306/shop`` or ``sqlite+aiosqlite:///shop.sqlite3``);
the outbox tables come from the workers (they create them at start-up).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from examples.fastapi_app.handlers import orders
from outbox_app import InvalidEvent, apublish, load_handlers
from outbox_app.clock import utcnow

load_handlers("examples.fastapi_app.handlers")  # publish() must know the event types
engine = create_async_engine(os.environ["EXAMPLE_DATABASE_URL"])
sessions = async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    await engine.dispose()


app = FastAPI(title="outbox example: shop", lifespan=lifespan)


class NewOrder(BaseModel):
    customer: str = Field(min_length=1, max_length=64)
    items: int = Field(ge=1)


@app.post("/orders", status_code=201)
async def place_order(order: NewOrder) -> dict[str, int]:
    async with sessions() as session, session.begin():
        result = await session.execute(
            insert(orders).values(customer=order.customer, items=order.items, created_at=utcnow())
        )
        order_id = int(result.inserted_primary_key[0])
        try:
            outbox_id = await apublish(
                session,
                "order.placed",
                {"order_id": order_id, "customer": order.customer, "items": order.items},
                key=order.customer,  # one customer's orders keep their order
            )
        except InvalidEvent as exc:  # rolls back the order too: nothing half-done
            raise HTTPException(status_code=422, detail=str(exc)) from None
    return {"order_id": order_id, "outbox_id": outbox_id}
