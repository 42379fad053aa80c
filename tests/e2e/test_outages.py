"""What is around a worker going away and coming back: the broker, the database. An
outage spends no event's attempts, a worker started during one waits for it to end, and a
refusal (credentials, unknown database) stops it at once with exit code 2. A poison event
that kills its worker every time still ends dead.

The broker tests take the suite's broker down (SIGKILL) and bring it back on its data;
the database test uses a private MariaDB server of its own.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from outbox_app import default_registry
from outbox_app.devtools.soak.processes import PrivateMariaDB
from outbox_app.records import Status
from outbox_app.schema import create_schema
from tests.conftest import MYSQL_ADMIN_URL, fresh_mariadb_database
from tests.e2e.helpers import (
    Stack,
    effects,
    publish_many,
    running_stack,
    status_counts,
    wait_status,
)
from tests.support import ROOT, TestBroker, unique_prefix, wait_for, worker_env

# Backoff of at most 1 s and 3 attempts: an event's whole retry schedule is a few seconds,
# far shorter than the outages below.
SHORT_RETRIES = {"OUTBOX_BACKOFF_CAP": "1", "OUTBOX_CLAIM_LEASE": "6"}


@pytest.fixture
def stack(tmp_path: Path, broker: TestBroker) -> Iterator[Stack]:
    with running_stack(tmp_path, broker, "outbox_outage") as s:
        yield s


def flaky_ok(n: int, start: int = 0) -> list[tuple[str, dict[str, int], str]]:
    return [("flaky.ok", {"i": i}, f"k{i % 5}") for i in range(start, start + n)]


def all_consumed_once(stack: Stack, ids: list[int], timeout: float) -> None:
    for row_id in ids:
        wait_status(stack, "flaky", row_id, Status.CONSUMED, timeout)
    for row_id in ids:
        assert len(effects(stack.engine, row_id)) == 1
        row = stack.store("flaky").get(row_id)
        assert row is not None and row.retry_count == 0  # the outage spent nothing


def test_a_worker_started_before_the_broker_waits_for_it_then_works(stack: Stack) -> None:
    stack.broker.down()
    try:
        worker = stack.worker("flaky")
        wait_for(lambda: "waiting for the Kafka broker" in worker.log(), 30, "the waiting line")
        time.sleep(3)  # the worker must still be waiting, not gone (this is what is tested)
        assert worker.proc is not None and worker.proc.poll() is None, worker.log()
    finally:
        stack.broker.up()
    ids = publish_many(stack.engine, flaky_ok(5), max_retry=3)
    all_consumed_once(stack, ids, 90)
    log = worker.log()
    assert log.count("waiting for the Kafka broker") == 1, log  # said once, not per retry
    assert "answers; starting" in log


def test_a_broker_outage_longer_than_every_backoff_schedule_sends_nothing_dead(
    stack: Stack,
) -> None:
    worker = stack.worker("flaky", **SHORT_RETRIES)
    before = publish_many(stack.engine, flaky_ok(5), max_retry=3)
    all_consumed_once(stack, before, 90)
    stack.broker.down()
    try:
        during = publish_many(stack.engine, flaky_ok(20, start=5), max_retry=3)
        wait_for(lambda: "paused, broker unavailable" in worker.log(), 60, "the relay to pause")
        time.sleep(12)  # an outage several times an event's whole retry schedule
        counts = status_counts(stack.engine, "flaky")
        assert counts.get("dead", 0) == 0, counts
    finally:
        stack.broker.up()
    all_consumed_once(stack, during, 120)
    assert status_counts(stack.engine, "flaky") == {"consumed": 25}
    # Logged once the relay's last rounds have settled, which can be after their rows
    # were consumed.
    wait_for(lambda: "resumed after" in worker.log(), 30, "the relay to say it resumed")
    log = worker.log()
    assert log.count("paused, broker unavailable") == 1, log
    assert worker.proc is not None and worker.proc.poll() is None


@pytest.fixture
def private_db(tmp_path: Path) -> Iterator[PrivateMariaDB]:
    if not PrivateMariaDB.available():
        pytest.skip("needs mariadbd and mariadb-install-db for a private database server")
    server = PrivateMariaDB(tmp_path)
    server.start()
    admin = create_engine(server.admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text("CREATE DATABASE outage CHARACTER SET utf8mb4"))
    admin.dispose()
    try:
        yield server
    finally:
        server.close()


def test_a_database_outage_longer_than_every_backoff_schedule_sends_nothing_dead(
    tmp_path: Path, broker: TestBroker, private_db: PrivateMariaDB
) -> None:
    stack = Stack(tmp_path, broker, private_db.admin_url + "outage")
    try:
        worker = stack.worker("flaky", **SHORT_RETRIES)
        first = publish_many(stack.engine, flaky_ok(5), max_retry=3)
        all_consumed_once(stack, first, 90)
        # Rows on their way: published and pending while the database goes away.
        backlog = publish_many(stack.engine, flaky_ok(30, start=5), max_retry=3)
        assert private_db.proc is not None
        private_db.proc.send_signal(signal.SIGKILL)
        private_db.proc.wait(30)
        time.sleep(10)  # longer than the rows' whole retry schedule
        stack.engine.dispose()  # the test's own pool holds dead connections too
        private_db.restart(crash=True)
        all_consumed_once(stack, backlog, 120)
        assert status_counts(stack.engine, "flaky") == {"consumed": 35}
        wait_for(
            lambda: any(s in worker.log() for s in ("the database answers again", "resumed after")),
            30,
            "the worker to say the database answers again",
        )
        assert worker.proc is not None and worker.proc.poll() is None
    finally:
        stack.close()


def test_a_worker_started_before_the_database_waits_for_it_then_works(
    tmp_path: Path, broker: TestBroker, private_db: PrivateMariaDB
) -> None:
    stack = Stack(tmp_path, broker, private_db.admin_url + "outage")  # tables made first
    try:
        stack.engine.dispose()
        assert private_db.proc is not None
        private_db.proc.send_signal(signal.SIGTERM)  # the database is down at start-up
        private_db.proc.wait(60)
        worker = stack.worker("flaky", **SHORT_RETRIES)
        wait_for(lambda: "waiting for the database" in worker.log(), 60, "the waiting line")
        assert worker.proc is not None and worker.proc.poll() is None, worker.log()
        private_db.restart(crash=False)
        ids = publish_many(stack.engine, flaky_ok(5), max_retry=3)
        all_consumed_once(stack, ids, 120)
        log = worker.log()
        assert log.count("waiting for the database") == 1, log  # said once, not per retry
        assert "schema ready" in log and "Traceback" not in log, log
        assert "/outage" in log  # names the database it waits for
    finally:
        stack.close()


def run_worker_until_exit(
    env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "outbox_app", "worker"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_wrong_database_credentials_or_an_unknown_database_exit_2_naming_them(
    broker: TestBroker,
) -> None:
    admin = create_engine(MYSQL_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text("DROP USER IF EXISTS 'outbox_wrong'@'%'"))
        conn.execute(text("CREATE USER 'outbox_wrong'@'%' IDENTIFIED BY 'right-password'"))
    try:
        base = make_url(MYSQL_ADMIN_URL)
        cases = {
            "password": base.set(
                username="outbox_wrong", password="s3cret-wrong-pw", database="mysql"
            ),
            "database": base.set(database="outbox_no_such_database"),
        }
        for case, url in cases.items():
            env = worker_env(url.render_as_string(False), broker, unique_prefix())
            run = run_worker_until_exit(env)
            out = run.stdout + run.stderr
            assert run.returncode == 2, (case, out[-3000:])
            assert "refused" in out, (case, out[-3000:])
            if case == "password":
                assert "Access denied for user 'outbox_wrong'" in out, out[-3000:]
                assert "s3cret-wrong-pw" not in out  # never the password
            else:
                assert "outbox_no_such_database" in out, out[-3000:]
            assert "Traceback" not in out, out[-3000:]
    finally:
        with admin.connect() as conn:
            conn.execute(text("DROP USER IF EXISTS 'outbox_wrong'@'%'"))
        admin.dispose()


def test_an_event_that_kills_its_worker_every_time_ends_dead(stack: Stack) -> None:
    """Its first delivery may go uncounted (an event created after the worker got its
    partitions skips the extra commit); each redelivery comes to a worker assigned after
    the crash, counts its attempt before the handler runs, so the crashes spend them."""
    worker = stack.worker("flaky")
    (poison,) = publish_many(stack.engine, [("flaky.crash", {}, "poison")], max_retry=2)
    (after,) = publish_many(stack.engine, [("flaky.ok", {}, "poison")], max_retry=2)
    restarts = 0
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline:
        row = stack.store("flaky").get(poison)
        if row is not None and row.status is Status.DEAD:
            break
        if worker.proc is not None and worker.proc.poll() is not None:
            restarts += 1  # as a process supervisor would
            worker = stack.worker("flaky")
        time.sleep(0.2)
    row = stack.store("flaky").get(poison)
    assert row is not None and row.status is Status.DEAD, stack.logs()
    assert row.last_error is not None and "attempts spent" in row.last_error
    assert row.retry_count == 2
    assert 2 <= restarts <= 4, restarts
    assert effects(stack.engine, poison) == []  # each crash rolled its write back
    wait_status(stack, "flaky", after, Status.CONSUMED, 90)  # the partition went on


def test_a_topic_deleted_under_a_running_worker_is_created_again(stack: Stack) -> None:
    """The relay creates it again after its first failed send; the consumer, whose
    partitions went away with the topic, gets the new topic's at its next metadata refresh
    (``OUTBOX_METADATA_MAX_AGE``); rows whose records it missed meanwhile come back through
    the visibility timeout: late, not lost, not doubled."""
    import asyncio

    from aiokafka.admin import AIOKafkaAdminClient

    worker = stack.worker(
        "flaky",
        **SHORT_RETRIES,
        OUTBOX_VISIBILITY_TIMEOUT="5s",
        OUTBOX_MAINTENANCE_INTERVAL="1s",
        OUTBOX_METADATA_MAX_AGE="5s",  # the consumer notices the new topic this soon
    )
    before = publish_many(stack.engine, flaky_ok(5), max_retry=3)
    all_consumed_once(stack, before, 90)

    async def delete() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=stack.broker.bootstrap)
        await admin.start()
        try:
            await admin.delete_topics([stack.topic("flaky")])
        finally:
            await admin.close()

    asyncio.run(delete())
    after = publish_many(stack.engine, flaky_ok(10, start=5), max_retry=3)
    all_consumed_once(stack, after, 120)
    assert status_counts(stack.engine, "flaky") == {"consumed": 15}
    log = worker.log()
    assert "had disappeared from the broker" in log, log[-3000:]
    assert worker.proc is not None and worker.proc.poll() is None


def test_a_worker_on_tables_that_differ_exits_2_naming_the_difference(
    broker: TestBroker,
) -> None:
    """A refusal too: no waiting will add the column. The worker says what differs and
    how to fix it, before it touches the broker."""
    url, drop = fresh_mariadb_database("outbox_schema")
    try:
        engine = create_engine(url)
        create_schema(engine, default_registry.routes(), default_registry.metadata)
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE agent_outbox DROP COLUMN traceparent"))
        engine.dispose()
        run = run_worker_until_exit(worker_env(url, broker, unique_prefix()))
        out = run.stdout + run.stderr
        assert run.returncode == 2, out[-3000:]
        assert "table agent_outbox: column traceparent missing" in out, out[-3000:]
        assert "outbox-app schema upgrade" in out and "Traceback" not in out, out[-3000:]
    finally:
        drop()
