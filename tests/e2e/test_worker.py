"""End to end: real worker processes, real MariaDB, a real Kafka-protocol broker."""

from __future__ import annotations

import signal
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from outbox_app.envelope import encode
from outbox_app.records import Status
from tests.e2e.helpers import (
    Stack,
    all_consumed,
    effects,
    envelope_ids,
    publish_many,
    read_topic,
    running_stack,
    running_webhook,
    scalar,
    send_raw,
    status_counts,
    wait_status,
)
from tests.support import TestBroker, wait_for


@pytest.fixture
def stack(tmp_path: Path, broker: TestBroker) -> Iterator[Stack]:
    with running_stack(tmp_path, broker, "outbox_e2e") as s:
        yield s


@pytest.fixture(scope="module")
def flaky(tmp_path_factory: pytest.TempPathFactory, broker: TestBroker) -> Iterator[Stack]:
    """One worker owning the ``flaky`` service, shared by the failure tests."""
    with running_stack(tmp_path_factory.mktemp("flaky"), broker, "outbox_e2e") as s:
        s.worker("flaky")
        yield s


# -- the business handlers, exactly once ---------------------------------------------------


def business_events(n_users: int = 20) -> list[tuple[str, Any, str | None]]:
    events: list[tuple[str, Any, str | None]] = []
    for i in range(1000):
        conv = f"c-{i % 50}"
        events.append(
            (
                "chat_history.persist",
                {
                    "user_id": i % n_users,
                    "conversation_id": conv,
                    "role": "user",
                    "message": f"m{i}",
                },
                conv,
            )
        )
    for i in range(600):
        user = i % n_users
        events.append(
            ("memory.upsert", {"user_id": user, "key": f"k{i % 5}", "value": str(i)}, str(user))
        )
    for i in range(500):
        user = i % n_users
        events.append(
            ("task.created", {"task_id": f"t-{i}", "user_id": user, "title": f"T{i}"}, str(user))
        )
        if i < 200:
            events.append(("task.completed", {"task_id": f"t-{i}", "user_id": user}, str(user)))
    for i in range(100):
        events.append(
            (
                "schedule.triggered",
                {
                    "schedule_id": f"s-{i}",
                    "user_id": i % n_users,
                    "fired_at": "2026-11-22T08:00:00Z",
                    "tasks": [{"title": "stand-up"}, {"title": "review", "due_at": "2026-11-23"}],
                },
                str(i % n_users),
            )
        )
    for i in range(400):
        events.append(
            (
                "notification.requested",
                {"user_id": i % n_users, "title": "hi", "body": f"n{i}"},
                None,
            )
        )
    return events


def test_3000_events_over_five_services_take_effect_exactly_once(stack: Stack) -> None:
    services = ["agent", "task", "memory", "notification", "active_scheduler"]
    with running_webhook() as hook:
        stack.worker(",".join(services), OUTBOX_NOTIFICATION_WEBHOOK_URL=hook.url)
        events = business_events()
        for i in range(0, len(events), 100):
            publish_many(stack.engine, events[i : i + 100])
        expected = {
            "agent": 1000,
            "memory": 600,
            "task": 900,
            "active_scheduler": 100,
            "notification": 600,
        }
        try:
            wait_for(
                lambda: all(all_consumed(stack.engine, s, n) for s, n in expected.items()),
                180,
                "every row of every service consumed",
                interval=0.5,
            )
        except AssertionError:
            print({s: status_counts(stack.engine, s) for s in services}, stack.logs())
            raise
        assert sum(expected.values()) >= 3000
        for service in services:
            assert status_counts(stack.engine, service) == {"consumed": expected[service]}
        e = stack.engine
        assert scalar(e, "SELECT COUNT(*) FROM chat_history") == 1000
        assert scalar(e, "SELECT COUNT(DISTINCT outbox_id) FROM chat_history") == 1000
        assert scalar(e, "SELECT SUM(version) FROM memories") == 600
        assert scalar(e, "SELECT COUNT(*) FROM memories") == 20  # (user, key) pairs
        assert scalar(e, "SELECT COUNT(*) FROM tasks") == 700
        assert scalar(e, "SELECT COUNT(*) FROM tasks WHERE status = 'done'") == 200
        assert scalar(e, "SELECT COUNT(*) FROM schedule_runs") == 100
        assert scalar(e, "SELECT COUNT(*) FROM notifications") == 600
        # at-least-once remote effect: every notification arrived, keyed for dedup
        wait_for(lambda: len(set(hook.keys())) == 600, 30, "600 distinct deliveries")
        ids = scalar(e, "SELECT GROUP_CONCAT(outbox_id) FROM notifications")
        assert set(hook.keys()) == {f"notification:{i}" for i in ids.split(",")}


# -- failures --------------------------------------------------------------------------------


def test_handler_failing_twice_is_consumed_on_attempt_3_after_backoff(flaky: Stack) -> None:
    (row_id,) = publish_many(flaky.engine, [("flaky.twice", {}, "a")], max_retry=5)
    row = wait_status(flaky, "flaky", row_id, Status.CONSUMED, 60)
    assert row.retry_count == 2
    assert row.last_error is None
    # backoff 1 s after attempt 1 and 4 s after attempt 2 (no jitter in tests)
    assert (row.consumed_at - row.created_at).total_seconds() >= 5.0
    assert [e.attempt for e in effects(flaky.engine, row_id)] == [3]


def test_handler_always_failing_goes_dead_after_max_retry(flaky: Stack) -> None:
    (row_id,) = publish_many(flaky.engine, [("flaky.always", {}, "b")], max_retry=3)
    row = wait_status(flaky, "flaky", row_id, Status.DEAD, 60)
    assert row.retry_count == 3
    assert row.last_error == "RuntimeError: this handler always fails"
    assert effects(flaky.engine, row_id) == []


def test_same_envelope_delivered_twice_has_one_effect(flaky: Stack) -> None:
    (row_id,) = publish_many(flaky.engine, [("flaky.ok", {}, "dup")])
    row = wait_status(flaky, "flaky", row_id, Status.CONSUMED, 60)
    key, value, _ = encode(row)
    send_raw(flaky.broker.bootstrap, flaky.topic("flaky"), [(key, value), (key, value)])
    # a later event with the same key lands behind the duplicates on the same partition
    (marker,) = publish_many(flaky.engine, [("flaky.ok", {}, "dup")])
    wait_status(flaky, "flaky", marker, Status.CONSUMED, 60)
    assert len(effects(flaky.engine, row_id)) == 1


def test_poison_records_do_not_stop_the_agent(flaky: Stack) -> None:
    store = flaky.store("flaky")
    with flaky.engine.begin() as conn:  # a row no handler knows (published by an old version)
        unknown = store.add(
            conn, event_type="flaky.retired", payload_json="{}", key="p", max_retry=5
        )
    poison = [
        (b"p", b"\x00\xffnot json at all"),
        (b"p", b'{"v": 1, "outbox_id": "seven", "event_type": "flaky.ok", "service": "flaky"}'),
        (b"p", b'{"v": 1, "outbox_id": 5, "event_type": "flaky.ok", "service": "agent"}'),
        (b"p", b'{"v": 99, "hello": "world"}'),
        (b"p", b'{"v": 1, "outbox_id": 987654321, "event_type": "flaky.ok", "service": "flaky"}'),
        (b"p", b"[1, 2, 3]"),
    ]
    send_raw(flaky.broker.bootstrap, flaky.topic("flaky"), poison)
    valid = publish_many(flaky.engine, [("flaky.ok", {"i": i}, "p") for i in range(10)])
    for row_id in valid:
        wait_status(flaky, "flaky", row_id, Status.CONSUMED, 60)
    dead = wait_status(flaky, "flaky", unknown, Status.DEAD, 30)
    assert dead.last_error == "unknown event type 'flaky.retired' for service 'flaky'"
    log = flaky.workers[0].log()
    assert "not an outbox envelope" in log  # logged before its batch's transaction
    # Logged after the transaction, which may be the one that consumed the last valid row.
    wait_for(lambda: "987654321" in flaky.workers[0].log(), 30, "the unknown outbox id logged")
    assert flaky.workers[0].proc is not None and flaky.workers[0].proc.poll() is None


# -- scale out and crashes -----------------------------------------------------------------------


def chat_events(start: int, n: int) -> list[tuple[str, Any, str | None]]:
    return [
        (
            "chat_history.persist",
            {
                "user_id": i,
                "conversation_id": f"c-{i % 37}",
                "role": "assistant",
                "message": str(i),
            },
            f"c-{i % 37}",
        )
        for i in range(start, start + n)
    ]


def assert_exactly_once(stack: Stack, total: int) -> None:
    e = stack.engine
    doubled = scalar(
        e,
        "SELECT COUNT(*) FROM (SELECT outbox_id FROM chat_history GROUP BY outbox_id "
        "HAVING COUNT(*) > 1) d",
    )
    assert doubled == 0
    assert scalar(e, "SELECT COUNT(*) FROM chat_history") == total
    assert status_counts(e, "agent") == {"consumed": total}


def test_two_workers_on_one_service_never_publish_a_row_twice(stack: Stack) -> None:
    total = 3000
    workers = [stack.worker("agent", OUTBOX_RELAY_BATCH="100") for _ in range(2)]
    # Both relays run before the rows exist, so they race for the same rows; with the
    # rows already there, one worker could relay them all while the other was starting.
    for w in workers:
        wait_for(lambda w=w: "relay agent started" in w.log(), 90, f"{w.log_path.name}'s relay")
    for i in range(0, total, 500):
        publish_many(stack.engine, chat_events(i, 500))
    try:
        wait_for(
            lambda: all_consumed(stack.engine, "agent", total), 120, "all consumed", interval=0.5
        )
    except AssertionError:
        print(status_counts(stack.engine, "agent"), stack.logs())
        raise
    ids = envelope_ids(read_topic(stack.broker.bootstrap, stack.topic("agent")))
    repeated = {i: n for i, n in Counter(ids).items() if n > 1}
    assert len(ids) == total and repeated == {}
    assert_exactly_once(stack, total)
    relays = [w.log().count("relay agent started") for w in stack.workers]
    assert relays == [1, 1]


def test_a_rebalance_stops_the_revoked_partition_actors_quietly(stack: Stack) -> None:
    first = stack.worker("agent")
    ids = publish_many(stack.engine, chat_events(0, 20))
    wait_for(lambda: all_consumed(stack.engine, "agent", 20), 90, "the first worker consuming")
    second = stack.worker("agent")  # joining revokes some of the first worker's partitions
    wait_for(lambda: "Stopping actor for revoked partition" in first.log(), 60, "a revocation")
    wait_for(lambda: "Setting newly assigned partitions" in second.log(), 60, "the second join")
    more = publish_many(stack.engine, chat_events(20, 40))
    wait_for(lambda: all_consumed(stack.engine, "agent", 60), 90, "both workers consuming")
    for log in (first.log(), second.log()):
        assert "Crashed reason=CancelledError" not in log  # a revoked partition is a normal stop
        assert "Traceback" not in log
    assert_exactly_once(stack, len(ids) + len(more))


def test_worker_killed_mid_stream_loses_and_doubles_nothing(stack: Stack) -> None:
    env = {"OUTBOX_CLAIM_LEASE": "5"}
    first = stack.worker("agent", **env)
    total, stop = 3000, threading.Event()

    def produce() -> None:
        for i in range(0, total, 50):
            publish_many(stack.engine, chat_events(i, 50))

    producer = threading.Thread(target=produce)
    producer.start()
    try:
        wait_for(
            lambda: status_counts(stack.engine, "agent").get("consumed", 0) >= 500,
            60,
            "the worker to be mid-stream",
            interval=0.05,
        )
        first.kill(signal.SIGKILL)
        assert first.proc is not None and first.proc.returncode == -signal.SIGKILL
        stack.worker("agent", **env)
    finally:
        producer.join()
        stop.set()
    try:
        wait_for(
            lambda: all_consumed(stack.engine, "agent", total), 120, "all consumed", interval=0.5
        )
    except AssertionError:
        print(status_counts(stack.engine, "agent"), stack.logs())
        raise
    assert_exactly_once(stack, total)


def test_webhook_down_for_a_while_then_every_notification_arrives(stack: Stack) -> None:
    with running_webhook() as hook:
        hook.down = True
        stack.worker("notification", OUTBOX_NOTIFICATION_WEBHOOK_URL=hook.url)
        ids = publish_many(
            stack.engine,
            [
                ("notification.requested", {"user_id": i, "title": "t", "body": "b"}, str(i))
                for i in range(40)
            ],
        )
        # Every notification refused at least once (a count could be one refused twice).
        keys = {f"notification:{i}" for i in ids}
        wait_for(lambda: hook.refused_keys >= keys, 60, "every first delivery to be refused")
        hook.down = False
        try:
            wait_for(lambda: all_consumed(stack.engine, "notification", 40), 60, "all delivered")
        except AssertionError:
            print(status_counts(stack.engine, "notification"), stack.logs())
            raise
        assert set(hook.keys()) == keys
        assert scalar(stack.engine, "SELECT MIN(delivery_attempts) FROM notifications") >= 2
        store = stack.store("notification")
        row = store.get(ids[0])
        assert row is not None and row.retry_count >= 1 and row.last_error is None


def test_a_relay_only_worker_and_a_consume_only_worker_share_a_service(stack: Stack) -> None:
    """OUTBOX_ROLES splits a service's two sides: one worker relays, another consumes."""
    ids = publish_many(stack.engine, [("flaky.ok", {"i": i}, f"k{i % 7}") for i in range(200)])
    relay = stack.worker("flaky", OUTBOX_ROLES="relay")
    # Relayed and nobody consumes: every row waits as published.
    wait_for(
        lambda: status_counts(stack.engine, "flaky") == {"published": 200},
        90,
        "the relay-only worker to publish everything",
        interval=0.2,
    )
    consume = stack.worker("flaky", OUTBOX_ROLES="consume")
    try:
        wait_for(lambda: all_consumed(stack.engine, "flaky", 200), 120, "all consumed")
    except AssertionError:
        print(status_counts(stack.engine, "flaky"), stack.logs())
        raise
    assert all(len(effects(stack.engine, i)) == 1 for i in ids)
    assert "relay flaky started" in relay.log() and "(roles relay)" in relay.log()
    assert "relay flaky started" not in consume.log() and "(roles consume)" in consume.log()
