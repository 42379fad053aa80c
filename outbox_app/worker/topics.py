"""The service topics: created (partitions, replication factor) or checked once at
start-up, and created again if they disappear while the worker runs.

Checked at start-up: a missing topic is created with ``OUTBOX_TOPIC_PARTITIONS`` and the
replication factor (``OUTBOX_TOPIC_REPLICATION``; auto: 3, or the brokers if fewer);
an existing one with fewer partitions is used as it is, with a warning (adding
partitions moves keys to other partitions, so that is an operator's decision).

While running (``TopicGuard``): after a failed send, the relay checks its topics before
it sends again and creates any that went missing (deleted by an operator, or a broker
that forgot them). A broker that keeps topics in memory (Tansu) forgets them when it
restarts, yet accepts produce requests for them from a client with cached metadata;
when the topic is then created, its offsets start again at zero while the records
already written stay, and every produce fails with ``UnknownError`` until the offsets
pass them (found by the soak). For such a broker the check also runs every
``OUTBOX_TOPIC_RECHECK_INTERVAL`` seconds before sends.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from outbox_app.errors import OutboxError
from outbox_app.worker.kafka import KafkaAccess

log = logging.getLogger(__name__)

TOPIC_ALREADY_EXISTS = 36
INVALID_REPLICATION_FACTOR = 38  # also while brokers are down: more may come back
MAX_AUTO_REPLICATION = 3


class TopicCreationRefused(OutboxError):
    """The broker answered a CreateTopics request with an error (not "already exists")."""

    def __init__(self, topic: str, code: int, message: str) -> None:
        self.topic, self.code = topic, code
        super().__init__(f"topic {topic} could not be created: {message}")

    @property
    def may_pass(self) -> bool:
        """Too few brokers for the replication factor: maybe only until they are back."""
        return self.code == INVALID_REPLICATION_FACTOR


class TopicAdmin:
    """One admin client, opened on first use and again after a failure."""

    def __init__(self, access: KafkaAccess, request_timeout_ms: int = 10_000) -> None:
        self.access = access
        self.request_timeout_ms = request_timeout_ms
        self._admin: Any = None

    async def client(self) -> Any:
        if self._admin is None:
            from aiokafka.admin import AIOKafkaAdminClient

            admin = AIOKafkaAdminClient(
                bootstrap_servers=self.access.bootstrap,
                request_timeout_ms=self.request_timeout_ms,
                **self.access.client_kwargs(),
            )
            await admin.start()
            self._admin = admin
        return self._admin

    async def partitions(self, topics: list[str]) -> dict[str, int | None]:
        return await topic_partitions(await self.client(), topics)

    async def brokers(self) -> int:
        admin = await self.client()
        return len((await admin.describe_cluster())["brokers"])

    async def create(self, topics: list[str], partitions: int, replication: int) -> list[str]:
        """Create the topics; returns those created (an existing one is not an error)."""
        from aiokafka.admin import NewTopic

        admin = await self.client()
        response = await admin.create_topics(
            [NewTopic(t, partitions, replication) for t in topics],
            timeout_ms=self.request_timeout_ms,
        )
        created = []
        for name, code, *rest in getattr(response, "topic_errors", []):
            if code == 0:
                created.append(name)
            elif code != TOPIC_ALREADY_EXISTS:
                message = rest[0] if rest and rest[0] else f"error code {code}"
                raise TopicCreationRefused(
                    name,
                    code,
                    f"{partitions} partitions, replication factor {replication}: {message}",
                )
        return created

    async def close(self) -> None:
        admin, self._admin = self._admin, None
        if admin is not None:
            try:
                await admin.close()
            except Exception as exc:  # noqa: BLE001 - closing a broken client
                log.debug("topic admin: closing the admin client failed: %s", exc)


@dataclass
class TopicPlan:
    topics: list[str]
    partitions: int
    replication: int = 0  # 0: auto, resolved by ensure()
    created: int = 0  # topics created (for tests and logs)
    notes: list[str] = field(default_factory=list)

    async def ensure(self, admin: TopicAdmin) -> None:
        """Create the missing topics; warn about existing ones with fewer partitions."""
        if self.replication == 0:
            self.replication = min(MAX_AUTO_REPLICATION, max(1, await admin.brokers()))
        found = await admin.partitions(self.topics)
        missing = [t for t, n in found.items() if n is None]
        for topic, n in found.items():
            if n is not None and n < self.partitions:
                note = (
                    f"topic {topic} has {n} partition(s), fewer than OUTBOX_TOPIC_PARTITIONS="
                    f"{self.partitions}: using it as it is (adding partitions moves keys to "
                    "other partitions; do it by hand while nothing is in flight)"
                )
                self.notes.append(note)
                log.warning("outbox: %s", note)
        if missing:
            created = await admin.create(missing, self.partitions, self.replication)
            self.created += len(created)
            if created:
                log.info(
                    "outbox: created topic(s) %s: %d partitions, replication factor %d",
                    ", ".join(created),
                    self.partitions,
                    self.replication,
                )


class TopicGuard:
    """Before the relay sends: make sure its topics exist, when a check is due (after a
    failed send, or every ``interval`` seconds when the broker is known to forget them).
    Raises when the broker cannot be reached: the send that asked fails then, as it
    would have anyway."""

    def __init__(self, admin: TopicAdmin, plan: TopicPlan, interval: float = 0.0) -> None:
        self.admin = admin
        self.plan = plan
        self.interval = interval
        self._lock: asyncio.Lock | None = None
        self._next_check = 0.0 if interval > 0 else float("inf")

    @property
    def created(self) -> int:
        return self.plan.created

    def suspect(self) -> None:
        """A send failed: the topic may be gone; check before the next send."""
        self._next_check = 0.0

    async def check(self) -> None:
        if time.monotonic() < self._next_check:
            return
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if time.monotonic() < self._next_check:
                return  # another send checked meanwhile
            before = self.plan.created
            try:
                await self.plan.ensure(self.admin)
            except Exception:
                await self.admin.close()  # a fresh connection next time
                raise
            if self.plan.created > before:
                log.warning(
                    "outbox: topic(s) had disappeared from the broker (deleted, or the broker "
                    "restarted without them): created again"
                )
            self._next_check = (
                time.monotonic() + self.interval if self.interval > 0 else float("inf")
            )

    async def close(self) -> None:
        await self.admin.close()


async def topic_partitions(admin: Any, topics: list[str]) -> dict[str, int | None]:
    """Partition count of each topic (an aiokafka admin client); None when it does not exist."""
    existing = set(await admin.list_topics())
    found: dict[str, int | None] = dict.fromkeys(topics)
    present = [t for t in topics if t in existing]
    if present:
        for doc in await admin.describe_topics(present):
            if doc.get("error_code", 0) == 0:
                found[doc["topic"]] = len(doc.get("partitions", []))
    return found
