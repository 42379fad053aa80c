"""Worker maintenance: stale-published recovery and the retention purge.

First ``Maintenance.run_once`` in-process against MariaDB (exact counts, batches,
off-switches), then real workers: a message dropped on the floor comes back and is
consumed once; a large purge runs while new events keep flowing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, event, func, insert, select, update
from sqlalchemy.orm import Session

from handlers.agent import chat_history
from outbox_app import Status, default_registry, publish
from outbox_app.clock import db_now, db_time
from outbox_app.database import make_engine
from outbox_app.schema import create_schema
from outbox_app.settings import Settings
from outbox_app.store import OutboxStore
from outbox_app.worker.maintenance import Maintenance
from outbox_app.worker.runtime import Runtime
from tests.support import Broker, Worker, port_open, running_broker, wait_for, worker_env


@pytest.fixture
def engine(mariadb_db: str) -> Iterator[Engine]:
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
    assert back.status == Status.PENDING and back.retry_count == 1  # it counts as an attempt
    assert "visibility timeout (30s)" in back.last_error
    assert row(engine, fresh).status == Status.PUBLISHED  # still within its timeout
    assert "1 published row(s) not consumed within 30s returned to pending" in caplog.text


def test_a_stale_row_without_attempts_left_goes_dead(engine: Engine, mariadb_db: str) -> None:
    last_chance = published_to_nowhere(engine, 1, max_retry=1)
    shift(engine, last_chance, "published_at", 60)
    runtime, m = maintenance(mariadb_db, visibility_timeout=30.0, retention=0.0)
    try:
        asyncio.run(m.run_once())
    finally:
        runtime.close()
    dead = row(engine, last_chance)
    assert dead.status == Status.DEAD and "visibility timeout" in dead.last_error


def test_a_stale_row_with_one_attempt_left_comes_back_claimable(engine: Engine) -> None:
    # Found by the soak: MySQL evaluates SET assignments left to right, so a CASE placed
    # after ``retry_count = retry_count + 1`` saw the new count; a row with one attempt
    # left came back pending with next_retry_at NULL and was never claimed again.
    store = agent_store(engine)
    one_left = published_to_nowhere(engine, 1, max_retry=3)
    t = store.table
    with engine.begin() as conn:
        conn.execute(update(t).where(t.c.id == one_left).values(retry_count=1))
    shift(engine, one_left, "published_at", 60)
    assert store.recover_stale(30.0) == 1
    back = row(engine, one_left)
    assert back.status == Status.PENDING and back.retry_count == 2
    assert back.next_retry_at is not None
    claim = store.claim_due(limit=10, lease_s=30)
    assert claim is not None and claim.ids == [one_left]


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


# -- real workers ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def broker() -> Iterator[Broker]:
    with running_broker() as b:
        yield b


def start_worker(tmp_path: Path, broker: Broker, url: str, **env: str) -> tuple[Worker, int]:
    wenv = worker_env(
        url, broker, OUTBOX_SERVICES="agent", OUTBOX_MAINTENANCE_INTERVAL="0.5", **env
    )
    worker = Worker(wenv, tmp_path / "worker.log").start()
    port = int(wenv["OUTBOX_WEB_PORT"])
    wait_for(lambda: port_open(port), 60, "the worker's web view")
    return worker, port


def wait_consumed(engine: Engine, ids: list[int], timeout: float = 60) -> None:
    wait_for(
        lambda: all(row(engine, i).status == Status.CONSUMED for i in ids),
        timeout,
        f"rows {ids} to be consumed",
    )


def counter(port: int, name: str, service: str = "agent") -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and s.labels.get("service") == service:
                return float(s.value)
    return 0.0


def chat_rows_for(engine: Engine, outbox_id: int) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count())
                .select_from(chat_history)
                .where(chat_history.c.outbox_id == outbox_id)
            ).scalar_one()
        )


def test_a_message_lost_by_the_broker_is_republished_and_consumed_once(
    engine: Engine, mariadb_db: str, broker: Broker, tmp_path: Path
) -> None:
    before_start = published_to_nowhere(engine, 1)  # lost before the worker even started
    worker, port = start_worker(
        tmp_path, broker, mariadb_db, OUTBOX_VISIBILITY_TIMEOUT="2s", OUTBOX_RETENTION="0"
    )
    try:
        wait_consumed(engine, [before_start], timeout=90)
        # Now drop one while the worker runs: committed straight as published, so its
        # relay never sees it pending and the broker never gets it.
        store = agent_store(engine)
        with engine.begin() as conn:
            payload = {"user_id": 1, "conversation_id": "c-m", "role": "user", "message": "lost"}
            lost = store.add(
                conn,
                event_type="chat_history.persist",
                payload_json=json.dumps(payload),
                key="lost",
                max_retry=20,
            )
            conn.execute(
                update(store.table)
                .where(store.table.c.id == lost)
                .values(status=Status.PUBLISHED.value, published_at=db_time(), next_retry_at=None)
            )
        first_published = row(engine, lost).published_at
        wait_consumed(engine, [lost], timeout=30)
        done = row(engine, lost)
        assert done.retry_count >= 1  # the recovery counted as an attempt
        assert done.published_at > first_published  # the relay published it again
        assert done.consumed_at - first_published >= timedelta(seconds=2)  # not before timeout
        for outbox_id in (before_start, lost):
            assert chat_rows_for(engine, outbox_id) == 1  # its handler's effect: exactly once
        assert "returned to pending" in worker.log()
        assert counter(port, "outbox_stale_recovered_total") >= 2
    finally:
        worker.stop()


def test_a_large_purge_does_not_stop_the_relay(
    engine: Engine, mariadb_db: str, broker: Broker, tmp_path: Path
) -> None:
    store = agent_store(engine)
    t = store.table
    worker, port = start_worker(
        tmp_path,
        broker,
        mariadb_db,
        OUTBOX_VISIBILITY_TIMEOUT="0",
        OUTBOX_RETENTION="1d",
        OUTBOX_PURGE_BATCH="100",
    )
    try:
        wait_consumed(engine, [chat(engine, 0)], timeout=90)  # the worker is up and consuming

        # Rows the purge must leave alone: consumed recently, dead or published long ago.
        keep_consumed = consumed_rows(engine, 20, age_s=3600)
        with engine.begin() as conn:  # dead on arrival: the running relay never sees it
            keep_dead = store.add(
                conn, event_type="chat_history.persist", payload_json="{}", key=None, max_retry=1
            )
            store.mark_dead({keep_dead: "test"}, conn)
        shift(engine, keep_dead, "updated_at", 5 * 86400)
        # Then many rows consumed two days ago, in one transaction so the purge meets them
        # all at once.
        now = db_now(store.engine)
        old = now - timedelta(days=2)
        big = 50_000
        with engine.begin() as conn:
            conn.execute(
                insert(t),
                [
                    {
                        "event_type": "chat_history.persist",
                        "service_name": "agent",
                        "topic": store.route.topic,
                        "message_key": f"old{n}",
                        "payload": "{}",
                        "status": Status.CONSUMED.value,
                        "retry_count": 0,
                        "max_retry": 20,
                        "published_at": old,
                        "consumed_at": old,
                        "created_at": old,
                        "updated_at": old,
                    }
                    for n in range(big)
                ],
            )
        cutoff = now - timedelta(days=1)

        def old_left() -> int:
            with engine.connect() as conn:
                return int(
                    conn.execute(
                        select(func.count()).where(
                            t.c.status == Status.CONSUMED.value, t.c.consumed_at < cutoff
                        )
                    ).scalar_one()
                )

        # Events keep flowing while the purge works through its batches.
        during = []
        probes = []
        while (left := old_left()) > 0:
            probe = chat(engine, 1000 + len(probes))
            probes.append(probe)
            wait_consumed(engine, [probe], timeout=10)
            after = old_left()
            if 0 < after < big:
                during.append((left, after))
        assert during, "no event was relayed and consumed while the purge was in progress"
        wait_for(lambda: old_left() == 0, 120, "the purge to finish")

        assert all(row(engine, i).status == Status.CONSUMED for i in keep_consumed)
        assert row(engine, keep_dead).status == Status.DEAD
        assert all(row(engine, i).status == Status.CONSUMED for i in probes)
        assert "purged" in worker.log()
        assert counter(port, "outbox_purged_total") >= big
        print(f"purge of {big} rows: {len(probes)} probes, {len(during)} consumed meanwhile")
    finally:
        worker.stop()
