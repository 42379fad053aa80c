"""Operator actions shared by the CLI and the web view: stats, dead letters, requeue,
purge. Blocking; the web view runs them through the database executor."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine

from .database import make_engine
from .errors import OutboxError
from .records import OutboxRow, Status
from .registry import Registry, default_registry
from .schema import create_schema
from .settings import Settings
from .store import OutboxStore


@dataclass
class Operations:
    registry: Registry
    stores: dict[str, OutboxStore]

    @classmethod
    def from_env(cls, settings: Settings | None = None) -> Operations:
        settings = settings or Settings.from_env()
        registry = default_registry
        registry.load_modules(settings.handler_modules)
        engine = make_engine(settings.database_url, pool_size=2)
        create_schema(engine, registry.routes(), registry.metadata)
        return cls.for_engine(engine, registry)

    @classmethod
    def for_engine(
        cls, engine: Engine, registry: Registry, services: Sequence[str] | None = None
    ) -> Operations:
        names = registry.services if services is None else list(services)
        return cls(registry, {s: OutboxStore(engine, registry.route(s)) for s in names})

    def store(self, service: str) -> OutboxStore:
        if service not in self.stores:
            self.registry.route(service)  # raises UnknownService naming the known ones
            raise OutboxError(f"service {service!r} is not served here")
        return self.stores[service]

    def stats(self) -> dict[str, Any]:
        """The document of ``outbox-app stats --json`` and ``GET /outbox/stats/``."""
        return {"services": {name: s.counts().as_dict() for name, s in self.stores.items()}}

    def dead(
        self, service: str, limit: int = 50, offset: int = 0, event_type: str | None = None
    ) -> list[OutboxRow]:
        return self.store(service).list_by_status(
            Status.DEAD, limit=limit, offset=offset, event_type=event_type
        )

    def message(self, service: str, outbox_id: int) -> OutboxRow | None:
        return self.store(service).get(outbox_id)

    def requeue(
        self,
        service: str,
        ids: Sequence[int] | None = None,
        event_type: str | None = None,
    ) -> list[int]:
        if event_type is not None and self.registry.owner(event_type) != service:
            raise OutboxError(
                f"event type {event_type!r} belongs to service "
                f"{self.registry.owner(event_type)!r}, not {service!r}"
            )
        return self.store(service).requeue_dead(ids, event_type)

    def purge(self, older_than_s: float, batch: int, dry_run: bool) -> dict[str, int]:
        return {
            name: s.purge_consumed(older_than_s, batch, dry_run=dry_run)
            for name, s in self.stores.items()
        }
