"""Worker maintenance with a real worker: a message dropped on the floor comes back and is
consumed once; a large purge runs while new events keep flowing."""

from __future__ import annotations

import json
import urllib.request
from datetime import timedelta
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, func, insert, select, update

from handlers.agent import chat_history
from outbox_app import Status
from outbox_app.clock import db_now, db_time
from tests.e2e.helpers import envelope_ids, read_topic
from tests.integration.test_maintenance import (  # noqa: F401 - handlers_engine: a fixture
    agent_store,
    chat,
    consumed_rows,
    handlers_engine,
    published_to_nowhere,
    row,
    shift,
)
from tests.support import TestBroker, Worker, port_open, unique_prefix, wait_for, worker_env


def start_worker(
    tmp_path: Path, broker: TestBroker, url: str, **env: str
) -> tuple[Worker, int, str]:
    prefix = unique_prefix()
    wenv = worker_env(
        url,
        broker,
        prefix,
        OUTBOX_SERVICES="agent",
        OUTBOX_MAINTENANCE_INTERVAL="0.5",
        **env,
    )
    worker = Worker(wenv, tmp_path / "worker.log").start()
    port = int(wenv["OUTBOX_WEB_PORT"])
    wait_for(lambda: port_open(port), 60, "the worker's web view")
    return worker, port, prefix


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
    engine: Engine, mariadb_db: str, broker: TestBroker, tmp_path: Path
) -> None:
    before_start = published_to_nowhere(engine, 1)  # lost before the worker even started
    worker, port, prefix = start_worker(
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
        assert done.retry_count == 0  # a message the broker lost is not the event's attempt
        # The relay published it again: its record is on the topic. (Not read from
        # published_at: the consumer may take the record before the relay's mark lands,
        # and the mark, for pending rows only, then leaves the first time in place.)
        on_topic = envelope_ids(read_topic(broker.bootstrap, prefix + store.route.topic))
        assert on_topic.count(lost) >= 1 and on_topic.count(before_start) >= 1
        assert done.consumed_at - first_published >= timedelta(seconds=2)  # not before timeout
        for outbox_id in (before_start, lost):
            assert chat_rows_for(engine, outbox_id) == 1  # its handler's effect: exactly once
        # The counter moves and the line is logged together (no await between them).
        wait_for(lambda: counter(port, "outbox_stale_recovered_total") >= 2, 30, "recoveries")
        assert "publishing them again (no attempt spent)" in worker.log()
    finally:
        worker.stop()


def test_a_large_purge_does_not_stop_the_relay(
    engine: Engine, mariadb_db: str, broker: TestBroker, tmp_path: Path
) -> None:
    store = agent_store(engine)
    t = store.table
    worker, port, _ = start_worker(
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

        # Events keep flowing while the purge works through its batches. A row halfway
        # is held locked until one event went through meanwhile, so that a quick purge
        # cannot finish between two probes (its batch waits there; the lock is by
        # primary key, so nothing else waits).
        with engine.connect() as conn:
            middle = conn.execute(
                select(t.c.id).where(t.c.message_key == f"old{big // 2}")
            ).scalar_one()
        during = []
        probes = []
        with engine.connect() as holder:
            holder.begin()
            holder.execute(select(t.c.id).where(t.c.id == middle).with_for_update())
            while (left := old_left()) > 0:
                probe = chat(engine, 1000 + len(probes))
                probes.append(probe)
                wait_consumed(engine, [probe], timeout=10)
                after = old_left()
                if 0 < after < big:
                    during.append((left, after))
                    if holder.in_transaction():
                        holder.rollback()  # one went through: let the purge go on
        assert during, "no event was relayed and consumed while the purge was in progress"
        wait_for(lambda: old_left() == 0, 120, "the purge to finish")

        assert all(row(engine, i).status == Status.CONSUMED for i in keep_consumed)
        assert row(engine, keep_dead).status == Status.DEAD
        assert all(row(engine, i).status == Status.CONSUMED for i in probes)
        # The counter moves (and the line is logged) once the purge's last batch has
        # returned, just after the rows went.
        wait_for(lambda: counter(port, "outbox_purged_total") >= big, 30, "the purge counter")
        assert "purged" in worker.log()
        print(f"purge of {big} rows: {len(probes)} probes, {len(during)} consumed meanwhile")
    finally:
        worker.stop()
