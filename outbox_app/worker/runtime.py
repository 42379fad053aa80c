"""What a worker holds at run time: engine, database thread pool, stores, metrics."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol, TypeVar

from sqlalchemy.exc import OperationalError

from outbox_app.database import DatabaseExecutor, make_engine, refusal
from outbox_app.errors import DatabaseRefused, DatabaseUnavailable, SchemaMismatch, short_error
from outbox_app.redelivery import Redeliveries
from outbox_app.registry import Registry
from outbox_app.retry import Backoff, RetryPolicy
from outbox_app.schema import create_schema
from outbox_app.schema_diff import compare, expected_tables
from outbox_app.settings import Settings
from outbox_app.store import OutboxStore
from outbox_app.worker.health import Health
from outbox_app.worker.metrics import Metrics

log = logging.getLogger(__name__)
T = TypeVar("T")


class Wakeable(Protocol):
    def wake(self) -> None: ...


class Runtime:
    def __init__(self, settings: Settings, registry: Registry, services: list[str]) -> None:
        self.settings = settings
        self.registry = registry
        self.services = services
        # create_engine does not connect: importing the app stays free of I/O.
        self.engine = make_engine(settings.require_database(), settings.db_pool_size)
        self.executor = DatabaseExecutor(settings.db_pool_size)
        self.policy = RetryPolicy(settings.backoff_cap, settings.backoff_jitter)
        self.stores = {
            s: OutboxStore(self.engine, registry.route(s), self.policy) for s in registry.services
        }
        # The Kafka topic of each owned service (OUTBOX_TOPIC_PREFIX applied).
        self.topics = {s: settings.topic_prefix + registry.route(s).topic for s in services}
        self.metrics = Metrics()
        self.health = Health()
        # Which deliveries may be a crashed worker's (the app tells it of assignments).
        self.redeliveries = Redeliveries(settings.clock_skew)
        # This worker's relays by service: a handler's follow-up events wake theirs.
        self.relays: dict[str, Wakeable] = {}
        # Run when the worker stops, before the database pool closes.
        self.on_stop: list[Callable[[], Awaitable[None]]] = []
        self._ready: asyncio.Event | None = None

    def wake_relays(self, services: Iterable[str]) -> None:
        """Rows of these services were just committed by this process: their relays here
        poll at their next tick instead of after their idle pause."""
        for service in services:
            relay = self.relays.get(service)
            if relay is not None:
                relay.wake()

    def partitions_revoked(self, sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        """Faust's ``on_partitions_revoked`` signal: a rebalance began."""
        self.redeliveries.rebalancing()

    def partitions_assigned(self, sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        """Faust's ``on_partitions_assigned`` signal: the rebalance's new assignment."""
        self.redeliveries.assigned()

    @property
    def ready(self) -> asyncio.Event:
        if self._ready is None:
            self._ready = asyncio.Event()
        return self._ready

    async def start(self, sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep) -> None:
        """Create missing tables (outbox and business). While the database does not answer,
        log it once and retry with backoff; when it refuses us, raise ``DatabaseRefused``."""
        delay, waited = 0.5, False
        where = self.settings.safe_database_url
        while True:
            try:
                differences = await self.executor.run(self._prepare_schema)
                break
            except Exception as exc:  # noqa: BLE001 - the database may still be starting
                refused = refusal(exc)
                if refused is not None:
                    raise DatabaseRefused(f"database {where} refused: {refused}") from None
                if not waited:
                    log.warning(
                        "outbox: waiting for the database %s: %s; retrying with backoff",
                        where,
                        short_error(exc),
                    )
                    waited = True
                await sleep(delay)
                delay = min(delay * 2, 10.0)
        if differences:
            raise SchemaMismatch(where, differences)
        log.info(
            "outbox: schema ready on %s for services %s (roles %s)",
            where,
            ", ".join(self.services),
            ",".join(self.settings.roles),
        )
        self.ready.set()

    def _prepare_schema(self) -> list[str]:
        """Create what is missing (``OUTBOX_SCHEMA=create``), then compare every table with
        what the code expects; the differences, described."""
        routes, metadatas = self.registry.routes(), self.registry.metadata
        if self.settings.schema_mode == "create":
            create_schema(self.engine, routes, metadatas)
        with self.engine.connect() as conn:
            found = compare(conn, expected_tables(routes, metadatas))
        return [d.describe() for d in found]

    def close(self) -> None:
        self.executor.shutdown()
        self.engine.dispose()


async def until_the_database_answers(
    rt: Runtime, what: str, func: Callable[..., T], *args: Any, **kwargs: Any
) -> T:
    """Run whole transactions in the database pool, again and again while the database is
    away (lost connection, lock timeout, a deadlock the executor's own reruns did not get
    past: each rolled back whole, so running it again is safe). No event spends an
    attempt on that; the outage is logged once, and its end."""
    backoff = Backoff(0.2, 5.0)
    while True:
        try:
            result = await rt.executor.run(func, *args, **kwargs)
        except (DatabaseUnavailable, OperationalError) as exc:
            reason = short_error(exc)
            if rt.health.database.failed(reason):
                log.warning("%s rolled back (%s); retrying with backoff", what, reason)
            await asyncio.sleep(backoff.next())
            continue
        lasted = rt.health.database.answered()
        if lasted is not None:
            log.info("%s: the database answers again after %.1fs", what, lasted)
        return result
