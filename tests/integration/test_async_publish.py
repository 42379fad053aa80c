"""``apublish()`` joins an asyncio transaction (``AsyncSession`` or ``AsyncConnection``) with
the same checks as ``publish()``: on MariaDB through asyncmy and on SQLite through
aiosqlite."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

from outbox_app import InvalidEvent, Registry, UnknownEventType, apublish
from outbox_app.schema import create_schema
from outbox_app.store import OutboxStore


@dataclass
class Invoice:
    customer: str
    amount_cents: int


@pytest.fixture
def reg() -> Registry:
    r = Registry()
    r.register_event("invoice.requested", "billing", Invoice)
    return r


def async_url(url: str) -> str:
    parsed = make_url(url)
    driver = "mysql+asyncmy" if parsed.get_backend_name() == "mysql" else "sqlite+aiosqlite"
    return parsed.set(drivername=driver).render_as_string(False)


@pytest.fixture
def engines(db_url: str, engine: Engine, reg: Registry) -> Iterator[tuple[Engine, str]]:
    create_schema(engine, reg.routes())
    yield engine, async_url(db_url)


def run(url: str, work):  # type: ignore[no-untyped-def]
    async def main():  # type: ignore[no-untyped-def]
        aengine: AsyncEngine = create_async_engine(url)
        try:
            return await work(aengine)
        finally:
            await aengine.dispose()

    return asyncio.run(main())


def test_an_async_session_publishes_in_its_transaction(engines, reg: Registry) -> None:  # type: ignore[no-untyped-def]
    engine, url = engines
    store = OutboxStore(engine, reg.route("billing"))

    async def work(aengine: AsyncEngine) -> tuple[int, int]:
        async with AsyncSession(aengine) as session, session.begin():
            kept = await apublish(
                session, "invoice.requested", Invoice("c-1", 250), key="c-1", registry=reg
            )
        async with AsyncSession(aengine) as session:
            async with session.begin():
                gone = await apublish(
                    session, "invoice.requested", {"customer": "c-2", "amount_cents": 9},
                    registry=reg,
                )  # fmt: skip
                await session.rollback()
        return kept, gone

    kept, gone = run(url, work)
    row = store.get(kept)
    assert row is not None and row.payload == '{"customer":"c-1","amount_cents":250}'
    assert row.message_key == "c-1" and row.traceparent is not None
    assert store.get(gone) is None  # rolled back with the caller's transaction


def test_an_async_connection_publishes_too(engines, reg: Registry) -> None:  # type: ignore[no-untyped-def]
    engine, url = engines

    async def work(aengine: AsyncEngine) -> int:
        async with aengine.begin() as conn:
            return await apublish(
                conn, "invoice.requested", {"customer": "c", "amount_cents": 1}, registry=reg
            )

    row_id = run(url, work)
    assert OutboxStore(engine, reg.route("billing")).get(row_id) is not None


def test_async_publish_refuses_what_publish_refuses(engines, reg: Registry) -> None:  # type: ignore[no-untyped-def]
    _, url = engines

    async def work(aengine: AsyncEngine) -> list[str]:
        errors = []
        async with AsyncSession(aengine) as session, session.begin():
            for event_type, payload in (
                ("invoice.requested", {"customer": "c", "amount_cents": "lots"}),
                ("nobody.owns.this", {}),
            ):
                try:
                    await apublish(session, event_type, payload, registry=reg)
                except (InvalidEvent, UnknownEventType) as exc:
                    errors.append(str(exc))
        return errors

    bad_amount, unknown = run(url, work)
    assert "field 'amount_cents'" in bad_amount and "billing" in bad_amount
    assert "unknown event type 'nobody.owns.this'" in unknown
