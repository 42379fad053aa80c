"""The business handlers under ``handlers/``, each run by ``outbox_app.testing``'s harness
against SQLite and MariaDB (the plugin's ``outbox_harness`` fixture, its database URL
overridden here to run on both)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from handlers.active_scheduler import schedule_runs
from handlers.agent import chat_history
from handlers.memory import memories
from handlers.notification import WEBHOOK_ENV, notifications
from handlers.task import tasks
from outbox_app import InvalidEvent, Status, default_registry
from outbox_app.testing import HandlerHarness, Published


@pytest.fixture
def outbox_database_url(db_url: str) -> str:
    return db_url


def count(h: HandlerHarness, table: Any) -> int:
    return int(h.connection.execute(select(func.count()).select_from(table)).scalar_one())


# -- task ----------------------------------------------------------------------------------
def test_a_created_task_is_stored_once(outbox_harness: HandlerHarness) -> None:
    h = outbox_harness
    out = h.deliver("task.created", {"task_id": "t1", "user_id": 7, "title": "write"}, "7")
    assert out.consumed and out.ran and not out.published
    row = h.connection.execute(select(tasks).where(tasks.c.task_id == "t1")).one()
    assert (row.status, row.created_by_outbox_id) == ("open", out.outbox_id)

    again = h.redeliver(out)  # the same record twice: the outbox drops it
    assert again.duplicate and not again.ran and again.consumed
    assert count(h, tasks) == 1


def test_a_second_event_creating_the_same_task_goes_dead(outbox_harness: HandlerHarness) -> None:
    h = outbox_harness
    first = h.deliver("task.created", {"task_id": "t1", "user_id": 7, "title": "a"})
    twin = h.deliver("task.created", {"task_id": "t1", "user_id": 7, "title": "b"})
    assert first.consumed
    assert twin.dead and twin.ran
    assert f"already exists (created by outbox id {first.outbox_id})" in (twin.error or "")
    assert h.connection.execute(select(tasks.c.title)).scalars().all() == ["a"]


def test_completion_before_creation_retries_then_notifies(outbox_harness: HandlerHarness) -> None:
    h = outbox_harness
    early = h.deliver("task.completed", {"task_id": "t9", "user_id": 3}, "3")
    assert early.failed and early.attempts == 1
    assert "task 't9' does not exist (yet)" in (early.error or "")
    assert not early.published  # the failed attempt's writes are undone

    h.deliver("task.created", {"task_id": "t9", "user_id": 3, "title": "ship"}, "3")
    done = h.retry(early)
    assert done.consumed and done.attempts == 1  # one failed attempt counted
    assert done.published == [
        Published(
            "notification.requested",
            "notification",
            "3",
            {
                "user_id": 3,
                "title": "Task completed",
                "body": "ship is done.",
                "channel": "webhook",
            },
            done.published[0].outbox_id,
        )
    ]
    row = h.connection.execute(select(tasks).where(tasks.c.task_id == "t9")).one()
    assert (row.status, row.completed_by_outbox_id) == ("done", early.outbox_id)

    twice = h.deliver("task.completed", {"task_id": "t9", "user_id": 3}, "3")
    assert twice.consumed and not twice.published  # already done: nothing new


def test_a_task_that_never_appears_ends_dead_after_its_attempts(
    outbox_harness: HandlerHarness,
) -> None:
    h = outbox_harness
    out = h.deliver("task.completed", {"task_id": "ghost", "user_id": 1, "notify": False})
    while out.failed:
        out = h.retry(out)
    assert out.dead and out.attempts == 3  # the harness's default max_retry
    assert "does not exist" in (out.error or "")


# -- memory --------------------------------------------------------------------------------
def test_memory_upserts_by_user_and_key(outbox_harness: HandlerHarness) -> None:
    h = outbox_harness
    first = h.deliver("memory.upsert", {"user_id": 1, "key": "tz", "value": "UTC"}, "1")
    second = h.deliver("memory.upsert", {"user_id": 1, "key": "tz", "value": "CET"}, "1")
    h.redeliver(second)
    assert first.consumed and second.consumed
    row = h.connection.execute(select(memories)).one()
    assert (row.value, row.version, row.last_outbox_id) == ("CET", 2, second.outbox_id)


# -- agent ---------------------------------------------------------------------------------
def test_chat_history_is_written_and_a_bad_role_is_dead(outbox_harness: HandlerHarness) -> None:
    h = outbox_harness
    ok = h.deliver(
        "chat_history.persist",
        {"user_id": 1, "conversation_id": "c1", "role": "user", "message": "hi"},
    )
    bad = h.deliver(
        "chat_history.persist",
        {"user_id": 1, "conversation_id": "c1", "role": "robot", "message": "beep"},
    )
    assert ok.consumed
    assert bad.dead and "field 'role' must be one of" in (bad.error or "")
    rows = h.connection.execute(select(chat_history.c.outbox_id, chat_history.c.message)).all()
    assert [tuple(r) for r in rows] == [(ok.outbox_id, "hi")]


def test_a_payload_missing_a_field_is_refused_at_publish(outbox_harness: HandlerHarness) -> None:
    with pytest.raises(InvalidEvent, match="message"):
        outbox_harness.deliver(
            "chat_history.persist", {"user_id": 1, "conversation_id": "c1", "role": "user"}
        )


# -- active_scheduler ----------------------------------------------------------------------
FIRING = {
    "schedule_id": "weekly",
    "user_id": 4,
    "fired_at": "2026-11-30T08:00:00Z",
    "tasks": [{"title": "review"}, {"title": "plan", "due_at": "2026-12-01"}],
}


def test_a_firing_publishes_its_tasks_once(outbox_harness: HandlerHarness) -> None:
    h = outbox_harness
    out = h.deliver("schedule.triggered", FIRING, "4")
    assert out.consumed
    assert [(p.event_type, p.key, p.payload["task_id"]) for p in out.published] == [
        ("task.created", "4", "weekly@2026-11-30T08:00:00Z#0"),
        ("task.created", "4", "weekly@2026-11-30T08:00:00Z#1"),
    ]
    for p in out.published:  # the tasks' own handler, on the rows the firing published
        assert h.deliver_published(p).consumed
    assert count(h, tasks) == 2

    # The scheduler publishing the same firing again: consumed, nothing published.
    twin = h.deliver("schedule.triggered", FIRING, "4")
    assert twin.consumed and not twin.published
    assert count(h, schedule_runs) == 1


def test_a_scheduled_task_without_a_title_is_refused_naming_its_path(
    outbox_harness: HandlerHarness,
) -> None:
    bad = {**FIRING, "tasks": [{"title": "ok"}, {"due_at": "tomorrow"}]}
    with pytest.raises(InvalidEvent, match=r"field 'tasks\[1\]\.title': Field required"):
        outbox_harness.deliver("schedule.triggered", bad)


# -- notification: remote work after the commit --------------------------------------------
class Webhook:
    """A local HTTP receiver: records requests, answers ``status``."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], Any]] = []
        self.status = 200
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hook.requests.append((dict(self.headers), json.loads(body)))
                self.send_response(hook.status)
                self.end_headers()
                self.wfile.write(b"nope" if hook.status >= 300 else b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook(monkeypatch: pytest.MonkeyPatch) -> Iterator[Webhook]:
    hook = Webhook()
    monkeypatch.setenv(WEBHOOK_ENV, hook.url)
    yield hook
    hook.close()


@pytest.fixture
def delivering(outbox_engine: Engine) -> Iterator[HandlerHarness]:
    with HandlerHarness(outbox_engine, default_registry, run_after_commit=True) as harness:
        yield harness


NOTE = {"user_id": 5, "title": "Hello", "body": "there"}


def test_a_notification_is_recorded_and_handed_to_after_commit(
    outbox_harness: HandlerHarness,
) -> None:
    out = outbox_harness.deliver("notification.requested", NOTE)
    # Remote work is recorded, not run: the row is consumed only once it succeeds.
    assert out.status is Status.PENDING and not out.failed
    assert out.after_commit is not None and not out.after_commit.ran
    assert out.after_commit.result["notification_id"] == f"notification:{out.outbox_id}"
    assert count(outbox_harness, notifications) == 1


def test_a_notification_is_delivered_with_its_idempotency_key(
    delivering: HandlerHarness, webhook: Webhook
) -> None:
    out = delivering.deliver("notification.requested", NOTE)
    assert out.consumed and out.after_commit is not None and out.after_commit.error is None
    [(headers, body)] = webhook.requests
    assert headers["Idempotency-Key"] == f"notification:{out.outbox_id}"
    assert headers["X-Outbox-Attempt"] == "1"
    assert body["title"] == "Hello"


def test_a_refused_delivery_is_retried_and_counted_once_per_attempt(
    delivering: HandlerHarness, webhook: Webhook
) -> None:
    webhook.status = 503
    out = delivering.deliver("notification.requested", NOTE)
    assert out.failed and "webhook answered 503: nope" in (out.error or "")
    webhook.status = 200
    done = delivering.retry(out)
    assert done.consumed and done.attempts == 1
    assert [h["X-Outbox-Attempt"] for h, _ in webhook.requests] == ["1", "2"]
    # One notification row, its attempts counted (the database part ran twice).
    row = delivering.connection.execute(select(notifications)).one()
    assert row.delivery_attempts == 2
