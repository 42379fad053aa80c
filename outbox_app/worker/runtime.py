"""What a worker holds at run time: engine, database thread pool, stores, metrics."""

from __future__ import annotations

import asyncio
import logging

from outbox_app.database import DatabaseExecutor, make_engine
from outbox_app.registry import Registry
from outbox_app.retry import RetryPolicy
from outbox_app.schema import create_schema
from outbox_app.settings import Settings
from outbox_app.store import OutboxStore
from outbox_app.worker.metrics import Metrics

log = logging.getLogger(__name__)


class Runtime:
    def __init__(self, settings: Settings, registry: Registry, services: list[str]) -> None:
        self.settings = settings
        self.registry = registry
        self.services = services
        # create_engine does not connect: importing the app stays free of I/O.
        self.engine = make_engine(settings.database_url, settings.db_pool_size)
        self.executor = DatabaseExecutor(settings.db_pool_size)
        self.policy = RetryPolicy(settings.backoff_cap, settings.backoff_jitter)
        self.stores = {
            s: OutboxStore(self.engine, registry.route(s), self.policy) for s in registry.services
        }
        self.metrics = Metrics()
        self._ready: asyncio.Event | None = None

    @property
    def ready(self) -> asyncio.Event:
        if self._ready is None:
            self._ready = asyncio.Event()
        return self._ready

    async def start(self) -> None:
        """Create missing tables (outbox and business), retrying until the database answers."""
        delay = 0.5
        while True:
            try:
                await self.executor.run(
                    create_schema, self.engine, self.registry.routes(), self.registry.metadata
                )
                break
            except Exception as exc:  # noqa: BLE001 - the database may still be starting
                log.warning(
                    "outbox: database %s not ready (%s); retrying in %.1fs",
                    self.settings.safe_database_url,
                    type(exc).__name__,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
        log.info(
            "outbox: schema ready on %s for services %s",
            self.settings.safe_database_url,
            ", ".join(self.services),
        )
        self.ready.set()

    def close(self) -> None:
        self.executor.shutdown()
        self.engine.dispose()
