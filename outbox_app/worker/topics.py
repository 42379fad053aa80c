"""Keep the service topics in existence across broker restarts.

A broker that keeps its topics in memory (Tansu) forgets them when it restarts, yet
accepts produce requests for the forgotten topic from a client with cached metadata.
When the topic is then created (explicitly, or by a metadata request), its partitions'
offsets start again at zero while the records already written stay: every produce to
those partitions fails with ``UnknownError`` until the offsets pass them again (found
by the soak: tens of seconds of failed publishes). So the relay checks, before it
publishes, that its topics exist, and creates missing ones with their partition count
(FIELD-NOTES trap 3): at once after a failed send, else at most every ``interval``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any

log = logging.getLogger(__name__)

TOPIC_ALREADY_EXISTS = 36


class TopicGuard:
    def __init__(
        self,
        bootstrap: str,
        topics: Iterable[str],
        partitions: int,
        *,
        interval: float = 0.5,
        request_timeout_ms: int = 5000,
    ) -> None:
        self.bootstrap = bootstrap
        self.topics = sorted(set(topics))
        self.partitions = partitions
        self.interval = interval
        self.request_timeout_ms = request_timeout_ms
        self.created = 0  # topics this guard had to create (for tests and logs)
        self._admin: Any = None
        self._lock: asyncio.Lock | None = None
        self._next_check = 0.0

    def suspect(self) -> None:
        """A send failed: the broker may have restarted, check before the next send."""
        self._next_check = 0.0

    async def check(self) -> None:
        """Create any missing topic; raises when the broker cannot be reached (the send
        that asked fails then, as it would have anyway)."""
        if time.monotonic() < self._next_check:
            return
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if time.monotonic() < self._next_check:
                return  # another send checked meanwhile
            admin = await self._client()
            try:
                existing = set(await admin.list_topics())
                missing = [t for t in self.topics if t not in existing]
                if missing:
                    await self._create(admin, missing)
            except Exception:
                await self.close()  # a fresh connection next time
                raise
            self._next_check = time.monotonic() + self.interval

    async def _create(self, admin: Any, missing: list[str]) -> None:
        from aiokafka.admin import NewTopic

        response = await admin.create_topics(
            [NewTopic(t, self.partitions, 1) for t in missing],
            timeout_ms=self.request_timeout_ms,
        )
        created = []
        for name, code, *_ in getattr(response, "topic_errors", []):
            if code == 0:
                created.append(name)
            elif code != TOPIC_ALREADY_EXISTS:
                log.warning("topic %s could not be created: error code %s", name, code)
        self.created += len(created)
        if created:
            log.warning(
                "broker lost topic(s) %s (restarted?): created again with %d partitions",
                ", ".join(created),
                self.partitions,
            )

    async def _client(self) -> Any:
        if self._admin is None:
            from aiokafka.admin import AIOKafkaAdminClient

            admin = AIOKafkaAdminClient(
                bootstrap_servers=self.bootstrap, request_timeout_ms=self.request_timeout_ms
            )
            await admin.start()
            self._admin = admin
        return self._admin

    async def close(self) -> None:
        admin, self._admin = self._admin, None
        if admin is not None:
            try:
                await admin.close()
            except Exception as exc:  # noqa: BLE001 - closing a broken client
                log.debug("topic guard: closing the admin client failed: %s", exc)
