"""Service ``notification``: record the notification in the transaction, then deliver
it by HTTP POST to a webhook after the commit.

Delivery is at-least-once: the request carries an ``Idempotency-Key`` header (stable
across retries) for the receiver to drop repeats. A failed delivery (connection
error, timeout, non-2xx answer) is a failed attempt and is retried with backoff.
The webhook is ``OUTBOX_NOTIFICATION_WEBHOOK_URL``.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from typing import Any

import aiohttp
from sqlalchemy import (
    BigInteger,
    Column,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    insert,
    select,
    update,
)

from outbox_app import Event, HandlerContext, default_registry, handler
from outbox_app.clock import utcnow
from outbox_app.schema import Id, Timestamp

WEBHOOK_ENV = "OUTBOX_NOTIFICATION_WEBHOOK_URL"
TIMEOUT_S = float(os.environ.get("OUTBOX_NOTIFICATION_TIMEOUT", "10"))

metadata = default_registry.add_metadata(MetaData())

notifications = Table(
    "notifications",
    metadata,
    Column("id", Id, primary_key=True),
    Column("outbox_id", BigInteger, nullable=False, unique=True),
    Column("user_id", BigInteger, nullable=False, index=True),
    Column("channel", String(32), nullable=False),
    Column("title", String(255), nullable=False),
    Column("body", Text, nullable=False),
    Column("delivery_attempts", Integer, nullable=False),
    Column("created_at", Timestamp, nullable=False),
    Column("last_attempt_at", Timestamp, nullable=False),
)


@dataclass
class NotificationRequested:
    user_id: int
    title: str
    body: str
    channel: str = "webhook"


async def deliver(event: Event, notification: dict[str, Any]) -> None:
    """POST the notification; raises on any failure so the attempt is retried."""
    url = os.environ.get(WEBHOOK_ENV)
    if not url:
        raise RuntimeError(f"{WEBHOOK_ENV} is not set: nowhere to deliver notifications")
    headers = {
        "Idempotency-Key": event.idempotency_key,
        "X-Outbox-Attempt": str(event.attempt),
    }
    if event.traceparent:
        headers["traceparent"] = event.traceparent
    async with _client().post(url, json=notification, headers=headers) as response:
        if response.status >= 300:
            text = (await response.text())[:200]
            raise RuntimeError(f"webhook answered {response.status}: {text}")


@handler(
    "notification.requested",
    service="notification",
    payload=NotificationRequested,
    after_commit=deliver,
)
def record_notification(ctx: HandlerContext) -> dict[str, Any]:
    p: NotificationRequested = ctx.payload
    # This part runs again on each retry of a failed delivery: key it by outbox id.
    seen = ctx.session.execute(
        select(notifications.c.id).where(notifications.c.outbox_id == ctx.event.outbox_id)
    ).scalar_one_or_none()
    if seen is None:
        ctx.session.execute(
            insert(notifications).values(
                outbox_id=ctx.event.outbox_id,
                user_id=p.user_id,
                channel=p.channel,
                title=p.title,
                body=p.body,
                delivery_attempts=1,
                created_at=utcnow(),
                last_attempt_at=utcnow(),
            )
        )
    else:
        ctx.session.execute(
            update(notifications)
            .where(notifications.c.id == seen)
            .values(
                delivery_attempts=notifications.c.delivery_attempts + 1,
                last_attempt_at=utcnow(),
            )
        )
    return {
        "notification_id": ctx.event.idempotency_key,
        "user_id": p.user_id,
        "channel": p.channel,
        "title": p.title,
        "body": p.body,
    }


_clients: dict[asyncio.AbstractEventLoop, aiohttp.ClientSession] = {}


def _client() -> aiohttp.ClientSession:
    """One HTTP client per event loop, reused across deliveries."""
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None or client.closed:
        client = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT_S))
        _clients[loop] = client
    return client
