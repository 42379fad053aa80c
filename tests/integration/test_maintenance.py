"""Worker maintenance in process: stale-published recovery and the retention purge,
``Maintenance.run_once`` against MariaDB (exact counts, batches, off-switches). The same
with real workers is in ``tests/e2e/test_maintenance_worker.py``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, event, update
from sqlalchemy.orm import Session

from outbox_app import Status, default_registry, publish
from outbox_app.clock import db_time
from outbox_app.database import make_engine
from outbox_app.schema import create_schema
from outbox_app.settings import Settings
from outbox_app.store import OutboxStore
from outbox_app.worker.maintenance import Maintenance
from outbox_app.worker.runtime import Runtime


@pytest.fixture(name="engine")
def handlers_engine(mariadb_db: str) -> Iterator[Engine]:
    """MariaDB with the business handlers' tables."""
    default_registry.load_modules(["handlers"])
    eng = make_engine(mariadb_db)
    create_schema(eng, default_registry.routes(), default_registry.metadata)
    try:
        yield eng
    finally:
        eng.dispose()


def agent_store(engine: Engine) -> OutboxStore:
    return OutboxStore(engine, default_registry.route("agent"))


def chat(engine: Engine, n: int, max_retry: int | None = None) -> int:
    payload = {"user_id": 1, "conversation_id": "c-m", "role": "user", "message": f"m{n}"}
    with Session(engine) as session, session.begin():
        return publish(session, "chat_history.persist", payload, key=f"k{n}", max_retry=max_retry)


def published_to_nowhere(engine: Engine, n: int, max_retry: int | None = None) -> int:
    """A row the relay claimed and marked published, though nothing reached the broker."""
    row_id = chat(engine, n, max_retry)
    store = agent_store(engine)
    claim = store.claim_due(limit=1000, lease_s=30)
    assert claim is not None and row_id in claim.ids
    assert store.mark_published(claim.ids, claim.token) == len(claim.ids)
    return row_id


def shift(engine: Engine, row_id: int, column: str, seconds: float) -> None:
    """Move a row's timestamp into the past by ``seconds`` (test set-up only)."""
    t = agent_store(engine).table
    with engine.begin() as conn:
        conn.execute(update(t).where(t.c.id == row_id).values({column: db_time(-seconds)}))


def row(engine: Engine, row_id: int) -> Any:
    return agent_store(engine).get(row_id)


def maintenance(url: str, **settings: Any) -> tuple[Runtime, Maintenance]:
    runtime = Runtime(Settings(database_url=url, **settings), default_registry, ["agent"])
    return runtime, Maintenance(runtime)


# -- in-process ------------------------------------------------------------------------------
def test_published_rows_past_the_visibility_timeout_go_back_to_pending(
    engine: Engine, mariadb_db: str, caplog: pytest.LogCaptureFixture
) -> None:
    stale = published_to_nowhere(engine, 1)
    shift(engine, stale, "published_at", 60)
    fresh = published_to_nowhere(engine, 2)
    runtime, m = maintenance(mariadb_db, visibility_timeout=30.0, retention=0.0)
    try:
        with caplog.at_level(logging.WARNING, logger="outbox_app.worker.maintenance"):
            assert asyncio.run(m.run_once()) == {"agent": (1, 0)}
        assert runtime.metrics.recovered.labels("agent")._value.get() == 1
    finally:
        runtime.close()
    back = row(engine, stale)
    assert back.status == Status.PENDING and back.retry_count == 0  # no attempt spent
    assert back.last_error is None
    assert row(engine, fresh).status == Status.PUBLISHED  # still within its timeout
    assert "1 published row(s) not consumed within 30s: publishing them again" in caplog.text


def test_a_stale_row_with_its_last_attempt_left_comes_back_claimable(
    engine: Engine, mariadb_db: str
) -> None:
    # A published row the broker lost keeps coming back however often it is lost: a lost
    # message is the broker's failure, not the event's. (Found by the soak, before: MySQL
    # evaluated SET assignments left to right, and a row with one attempt left came back
    # pending with next_retry_at NULL, never claimed again.)
    store = agent_store(engine)
    last_chance = published_to_nowhere(engine, 1, max_retry=3)
    t = store.table
    with engine.begin() as conn:
        conn.execute(update(t).where(t.c.id == last_chance).values(retry_count=2))
    runtime, m = maintenance(mariadb_db, visibility_timeout=30.0, retention=0.0)
    try:
        for _ in range(3):
            shift(engine, last_chance, "published_at", 60)
            assert asyncio.run(m.run_once()) == {"agent": (1, 0)}
            back = row(engine, last_chance)
            assert back.status == Status.PENDING and back.retry_count == 2
            assert back.next_retry_at is not None
            claim = store.claim_due(limit=10, lease_s=30)
            assert claim is not None and claim.ids == [last_chance]
            store.mark_published(claim.ids, claim.token)  # and lost again
    finally:
        runtime.close()


def consumed_rows(engine: Engine, count: int, age_s: float) -> list[int]:
    store = agent_store(engine)
    ids = [chat(engine, n) for n in range(count)]
    store.mark_consumed(ids)
    t = store.table
    with engine.begin() as conn:
        conn.execute(update(t).where(t.c.id.in_(ids)).values(consumed_at=db_time(-age_s)))
    return ids


def test_purge_deletes_old_consumed_rows_in_bounded_batches_and_nothing_else(
    engine: Engine, mariadb_db: str, caplog: pytest.LogCaptureFixture
) -> None:
    old = consumed_rows(engine, 7, age_s=3 * 86400)
    recent = consumed_rows(engine, 2, age_s=3600)
    dead = chat(engine, 100)
    agent_store(engine).mark_dead({dead: "test"})
    shift(engine, dead, "updated_at", 3 * 86400)
    pending = chat(engine, 101)
    runtime, m = maintenance(mariadb_db, visibility_timeout=0.0, retention=86400.0, purge_batch=3)

    deletes: list[str] = []

    @event.listens_for(runtime.engine, "before_cursor_execute")
    def count_deletes(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("DELETE"):
            deletes.append(statement)

    try:
        with caplog.at_level(logging.INFO, logger="outbox_app.worker.maintenance"):
            assert asyncio.run(m.run_once()) == {"agent": (0, 7)}
        assert runtime.metrics.purged.labels("agent")._value.get() == 7
    finally:
        runtime.close()
    assert len(deletes) == 3  # 3 + 3 + 1: one short transaction per batch
    assert all(row(engine, i) is None for i in old)
    assert all(row(engine, i).status == Status.CONSUMED for i in recent)
    assert row(engine, dead).status == Status.DEAD
    assert row(engine, pending).status == Status.PENDING
    assert "purged 7 consumed row(s) older than 86400s" in caplog.text


def test_maintenance_is_off_when_both_settings_are_zero(engine: Engine, mariadb_db: str) -> None:
    stale = published_to_nowhere(engine, 1)
    shift(engine, stale, "published_at", 3600)
    [old] = consumed_rows(engine, 1, age_s=30 * 86400)
    runtime, m = maintenance(mariadb_db, visibility_timeout=0.0, retention=0.0)
    try:
        assert not m.enabled  # build_app does not even start its timer
        assert asyncio.run(m.run_once()) == {"agent": (0, 0)}
    finally:
        runtime.close()
    assert row(engine, stale).status == Status.PUBLISHED
    assert row(engine, old).status == Status.CONSUMED
    on, _ = maintenance(mariadb_db, visibility_timeout=0.0, retention=60.0)
    try:
        assert Maintenance(on).enabled
    finally:
        on.close()
