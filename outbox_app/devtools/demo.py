"""Demo traffic for ``outbox-app dev --demo-rate N``: business transactions of the five
example services, each publishing its events through ``publish()``, plus a local
webhook that refuses a few notifications so that dead letters appear."""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from outbox_app.publish import publish
from outbox_app.registry import Registry

log = logging.getLogger(__name__)

FAIL_MARK = "[undeliverable]"

USERS = list(range(1, 41))
QUESTIONS = [
    "Can you summarise yesterday's stand-up?",
    "What is left on the release checklist?",
    "Draft a reply to the customer about the invoice.",
    "Remind me what we decided about the cache TTL.",
    "Which tests are flaky this week?",
]
ANSWERS = [
    "Here is a short summary.",
    "Three items remain: docs, changelog and the migration.",
    "Sure, here is a draft.",
    "We settled on five minutes with jitter.",
    "Two integration tests timed out twice.",
]
TASKS = ["Review PR", "Update runbook", "Rotate credentials", "Plan sprint", "Fix flaky test"]
MEMORY_KEYS = ["timezone", "language", "favourite_editor", "standup_time", "team"]


@dataclass
class DemoTraffic:
    """Publishes about ``rate`` events per second until stopped."""

    engine: Engine
    registry: Registry
    rate: float
    rng: random.Random = field(default_factory=lambda: random.Random(7))
    published: int = 0
    _open_tasks: list[tuple[str, int]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _seq: int = 0

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self._run, name="demo-traffic", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        actions: list[tuple[float, Callable[[Session], int]]] = [
            (0.45, self.chat_turn),
            (0.15, self.memory_update),
            (0.15, self.task_created),
            (0.10, self.task_completed),
            (0.05, self.schedule_fired),
            (0.10, self.notification),
        ]
        weights = [w for w, _ in actions]
        started, sent = time.monotonic(), 0
        while not self._stop.is_set():
            due = int((time.monotonic() - started) * self.rate) - sent
            if due <= 0:
                self._stop.wait(0.02)
                continue
            try:
                (action,) = self.rng.choices([a for _, a in actions], weights)
                with Session(self.engine) as session, session.begin():
                    n = action(session)  # one business transaction
                sent += n
                self.published += n
            except Exception as exc:  # noqa: BLE001 - keep the demo going, say why
                log.warning("demo traffic: transaction failed: %s: %s", type(exc).__name__, exc)
                self._stop.wait(1.0)

    def _pub(self, session: Session, event_type: str, payload: Any, key: str, **kw: Any) -> int:
        publish(session, event_type, payload, key=key, registry=self.registry, **kw)
        return 1

    def chat_turn(self, session: Session) -> int:
        user = self.rng.choice(USERS)
        conv = f"conv-{user}-{self.rng.randint(1, 3)}"
        i = self.rng.randrange(len(QUESTIONS))
        n = self._pub(
            session, "chat_history.persist", _chat(user, conv, "user", QUESTIONS[i]), conv
        )
        return n + self._pub(
            session, "chat_history.persist", _chat(user, conv, "assistant", ANSWERS[i]), conv
        )

    def memory_update(self, session: Session) -> int:
        user = self.rng.choice(USERS)
        key = self.rng.choice(MEMORY_KEYS)
        value = f"{key}-{self.rng.randint(1, 99)}"
        return self._pub(
            session, "memory.upsert", {"user_id": user, "key": key, "value": value}, str(user)
        )

    def task_created(self, session: Session) -> int:
        user = self.rng.choice(USERS)
        self._seq += 1
        task_id = f"demo-{int(time.time())}-{self._seq}"
        self._open_tasks.append((task_id, user))
        payload = {"task_id": task_id, "user_id": user, "title": self.rng.choice(TASKS)}
        return self._pub(session, "task.created", payload, str(user))

    def task_completed(self, session: Session) -> int:
        if not self._open_tasks:
            return self.task_created(session)
        task_id, user = self._open_tasks.pop(0)
        return self._pub(
            session, "task.completed", {"task_id": task_id, "user_id": user}, str(user)
        )

    def schedule_fired(self, session: Session) -> int:
        user = self.rng.choice(USERS)
        self._seq += 1
        payload = {
            "schedule_id": f"weekly-{user}",
            "user_id": user,
            "fired_at": f"{datetime.now(UTC).isoformat()}#{self._seq}",
            "tasks": [{"title": "Weekly review"}, {"title": "Clear inbox"}],
        }
        return self._pub(session, "schedule.triggered", payload, str(user))

    def notification(self, session: Session) -> int:
        user = self.rng.choice(USERS)
        if self.rng.random() < 0.1:
            # refused by the demo webhook: three quick attempts, then a dead letter
            payload = {"user_id": user, "title": f"Digest {FAIL_MARK}", "body": "bounced"}
            return self._pub(session, "notification.requested", payload, str(user), max_retry=3)
        payload = {"user_id": user, "title": "Daily digest", "body": "3 tasks due today"}
        return self._pub(session, "notification.requested", payload, str(user))


def _chat(user: int, conv: str, role: str, message: str) -> dict[str, Any]:
    return {"user_id": user, "conversation_id": conv, "role": role, "message": message}


class DemoWebhook:
    """A local notification receiver; refuses notifications marked undeliverable."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.received = 0
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/notifications"

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        if FAIL_MARK in str(body.get("title", "")):
            return web.Response(status=422, text="mailbox does not exist")
        self.received += 1
        return web.Response(status=204)

    def start(self) -> None:
        async def serve() -> None:
            app = web.Application()
            app.router.add_post("/notifications", self._handle)
            self._runner = web.AppRunner(app, access_log=None)
            await self._runner.setup()
            await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

        threading.Thread(target=self._loop.run_forever, name="demo-webhook", daemon=True).start()
        asyncio.run_coroutine_threadsafe(serve(), self._loop).result(10)

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
