"""Operator actions shared by the CLI and the web view: stats, dead letters, requeue,
purge. Blocking; the web view runs them through the database executor.

Inputs are checked here, once for both front ends: a bad one raises ``OutboxError``
with a message naming what was wrong (the CLI exits 2 with it, the web answers 400).
The documents returned are the ones both ``--json`` and the JSON endpoints print.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine

from outbox_app.database import make_engine
from outbox_app.errors import OutboxError
from outbox_app.ops.queries import OutboxQueries
from outbox_app.ops.signatures import MAX_SIGNATURE_CHARS, group_dead, signature
from outbox_app.ordering import KeyOrder
from outbox_app.records import OutboxRow, Status
from outbox_app.registry import Registry, default_registry
from outbox_app.settings import Settings
from outbox_app.store import OutboxStore

MAX_PAGE = 500  # rows per dead-letter page
MAX_OFFSET = 10_000_000
MAX_IDS = 1000  # ids per requeue request
MAX_PURGE_BATCH = 100_000
# Failure grouping reads at most this many of the newest dead rows (never the payloads):
# an incident with more dead rows shows its newest ones, and says the scan was cut.
DEAD_SCAN = 10_000
MAX_GROUPS = 500


@dataclass
class Operations:
    registry: Registry
    stores: dict[str, OutboxStore]

    def __post_init__(self) -> None:
        self.queries = {
            name: OutboxQueries(store.engine, store.route) for name, store in self.stores.items()
        }

    @classmethod
    def from_env(cls, settings: Settings | None = None) -> Operations:
        settings = settings or Settings.from_env()
        registry = default_registry
        registry.load_modules(settings.handler_modules)
        # Operators' commands never run DDL: the workers create the tables.
        engine = make_engine(settings.require_database(), pool_size=2)
        return cls.for_engine(engine, registry)

    @classmethod
    def for_engine(
        cls, engine: Engine, registry: Registry, services: Sequence[str] | None = None
    ) -> Operations:
        names = registry.services if services is None else list(services)
        return cls(registry, {s: OutboxStore(engine, registry.route(s)) for s in names})

    @property
    def services(self) -> list[str]:
        return sorted(self.stores)

    def store(self, service: str) -> OutboxStore:
        if service not in self.stores:
            self.registry.route(service)  # raises UnknownService naming the known ones
            raise OutboxError(
                f"service {service!r} is not served here; served: {', '.join(self.services)}"
            )
        return self.stores[service]

    def check_event_type(self, event_type: str, service: str | None = None) -> str:
        """The service owning ``event_type``; refuses one of another service."""
        owner = self.registry.owner(event_type)  # raises UnknownEventType
        if service is not None and owner != service:
            raise OutboxError(
                f"event type {event_type!r} belongs to service {owner!r}, not {service!r}"
            )
        self.store(owner)
        return owner

    # -- reading -------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """The document of ``outbox-app stats --json`` and ``GET /outbox/stats/``."""
        return {"services": {name: q.counts().as_dict() for name, q in self.queries.items()}}

    def dead_page(
        self, service: str, limit: int = 50, offset: int = 0, event_type: str | None = None
    ) -> dict[str, Any]:
        """One page of dead letters, newest first; one extra row tells if more follow."""
        check_page(limit, offset)
        store = self.store(service)
        if event_type is not None:
            self.check_event_type(event_type, service)
        rows = self.queries[store.route.service].list_by_status(
            Status.DEAD, limit=limit + 1, offset=offset, event_type=event_type
        )
        more = len(rows) > limit
        return {
            "service": service,
            "event_type": event_type,
            "limit": limit,
            "offset": offset,
            "items": [row_document(r) for r in rows[:limit]],
            "next_offset": offset + limit if more else None,
        }

    def dead_groups(self, service: str, limit: int = 100) -> dict[str, Any]:
        """Dead letters grouped by failure signature, the largest group first."""
        if not 1 <= limit <= MAX_GROUPS:
            raise OutboxError(f"limit must be between 1 and {MAX_GROUPS}, got {limit}")
        store = self.store(service)
        rows = self.queries[store.route.service].newest_dead(DEAD_SCAN + 1)
        cut = len(rows) > DEAD_SCAN
        groups = group_dead(rows[:DEAD_SCAN])
        return {
            "service": service,
            **_scan(min(len(rows), DEAD_SCAN), cut),
            "group_count": len(groups),
            "groups": [g.as_dict() for g in groups[:limit]],
        }

    def message(self, service: str, outbox_id: int) -> OutboxRow | None:
        check_id(outbox_id)
        return self.store(service).get(outbox_id)

    # -- changing ------------------------------------------------------------------------
    def requeue(
        self,
        service: str,
        ids: Sequence[int] | None = None,
        event_type: str | None = None,
    ) -> list[int]:
        """dead -> pending for the given ids, or every dead row of the event type, or (with
        neither) every dead row of the service. Returns the ids requeued."""
        store = self.store(service)
        if event_type is not None:
            self.check_event_type(event_type, service)
        if ids is not None:
            if not ids:
                raise OutboxError("no ids given to requeue")
            if len(ids) > MAX_IDS:
                raise OutboxError(f"at most {MAX_IDS} ids per requeue, got {len(ids)}")
            for i in ids:
                check_id(i)
        return store.requeue_dead(ids, event_type)

    def requeue_document(
        self, service: str, ids: Sequence[int] | None = None, event_type: str | None = None
    ) -> dict[str, Any]:
        done = self.requeue(service, ids, event_type)
        doc: dict[str, Any] = {"service": service, "requeued": done, "count": len(done)}
        if ids is not None:
            # Ids that were not dead (already requeued, consumed) are left alone; ids with
            # no row at all are named apart: most likely a typo, or the wrong service.
            skipped = sorted(set(ids) - set(done))
            found = self.queries[service].statuses(skipped) if skipped else {}
            doc["skipped"] = skipped
            doc["not_dead"] = {str(i): found[i].value for i in skipped if i in found}
            doc["unknown"] = [i for i in skipped if i not in found]
        return doc

    def requeue_signature_document(self, service: str, wanted: str) -> dict[str, Any]:
        """dead -> pending for the dead rows of the service whose failure signature is
        ``wanted``, among the newest ``DEAD_SCAN`` dead rows (the groups' own bound)."""
        check_signature(wanted)
        wanted = wanted.strip()  # a signature never starts or ends with a space
        store = self.store(service)
        rows = self.queries[store.route.service].newest_dead(DEAD_SCAN + 1)
        cut = len(rows) > DEAD_SCAN
        ids = sorted(r.id for r in rows[:DEAD_SCAN] if signature(r.last_error) == wanted)
        # requeue_dead only moves rows still dead: one requeued meanwhile is left alone.
        done = [i for chunk in _chunks(ids, MAX_IDS) for i in store.requeue_dead(chunk)]
        return {
            "service": service,
            "signature": wanted,
            "requeued": done,
            "count": len(done),
            **_scan(min(len(rows), DEAD_SCAN), cut),
        }

    # -- ordered services ------------------------------------------------------------------
    def order(self, service: str) -> KeyOrder:
        store = self.store(service)
        if not store.route.ordered:
            raise OutboxError(
                f"service {service!r} does not keep per-key order: no key of it is ever blocked"
            )
        return KeyOrder(store)

    def blocked_page(self, service: str, limit: int = 50) -> dict[str, Any]:
        """Keys whose later rows wait for an unfinished (often dead) head, the longest
        waiting first."""
        check_page(limit, 0)
        keys = self.order(service).blocked(limit)
        return {
            "service": service,
            "items": [
                {
                    "key": b.key,
                    "head": {
                        "id": b.head_id,
                        "status": b.head_status.value,
                        "event_type": b.head_event_type,
                        "last_error": b.head_error,
                    },
                    "parked": b.parked,
                    "blocked_since": b.since.isoformat() + "Z",
                }
                for b in keys
            ],
        }

    def skip_document(self, service: str, ids: Sequence[int]) -> dict[str, Any]:
        """dead -> skipped for these ids of an ordered service: their keys go on without
        them. Ids that are not dead are left alone and named."""
        order = self.order(service)
        if not ids:
            raise OutboxError("no ids given to skip")
        if len(ids) > MAX_IDS:
            raise OutboxError(f"at most {MAX_IDS} ids per skip, got {len(ids)}")
        for i in ids:
            check_id(i)
        done = order.skip(ids)
        left = sorted(set(ids) - set(done))
        found = self.queries[service].statuses(left) if left else {}
        return {
            "service": service,
            "skipped": done,
            "count": len(done),
            "not_dead": {str(i): found[i].value for i in left if i in found},
            "unknown": [i for i in left if i not in found],
        }

    def purge(
        self,
        older_than_s: float,
        batch: int,
        dry_run: bool,
        services: Sequence[str] | None = None,
    ) -> dict[str, int]:
        """Consumed rows older than the age, per service: deleted, or counted (dry run)."""
        if older_than_s <= 0:
            raise OutboxError("the age to purge must be greater than 0 (e.g. 7d)")
        if not 1 <= batch <= MAX_PURGE_BATCH:
            raise OutboxError(f"the purge batch must be between 1 and {MAX_PURGE_BATCH}")
        names = self.services if services is None else list(services)
        stores = [self.store(n) for n in names]
        return {
            s.route.service: s.purge_consumed(older_than_s, batch, dry_run=dry_run) for s in stores
        }


def check_page(limit: int, offset: int) -> None:
    if not 1 <= limit <= MAX_PAGE:
        raise OutboxError(f"limit must be between 1 and {MAX_PAGE}, got {limit}")
    if not 0 <= offset <= MAX_OFFSET:
        raise OutboxError(f"offset must be between 0 and {MAX_OFFSET}, got {offset}")


def check_signature(value: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise OutboxError(f"signature must be a non-empty string, got {value!r}")
    if len(value) > MAX_SIGNATURE_CHARS:
        raise OutboxError(
            f"signature must be at most {MAX_SIGNATURE_CHARS} characters, got {len(value)}"
        )


def _scan(scanned: int, cut: bool) -> dict[str, Any]:
    return {"scanned": scanned, "scan_limit": DEAD_SCAN, "scan_cut": cut}


def _chunks(ids: list[int], size: int) -> list[list[int]]:
    return [ids[i : i + size] for i in range(0, len(ids), size)]


def check_id(outbox_id: int) -> None:
    # bool is an int subclass: a JSON ``true`` must not pass as id 1.
    if isinstance(outbox_id, bool) or not isinstance(outbox_id, int) or outbox_id < 1:
        raise OutboxError(f"an outbox id is a positive integer, got {outbox_id!r}")


def row_document(row: OutboxRow) -> dict[str, Any]:
    """One outbox row as operators see it: the payload decoded when it is JSON."""
    try:
        payload: Any = json.loads(row.payload)
    except ValueError:
        payload = row.payload  # kept as text: it is what made the row dead, often
    times = row.as_dict()
    return {
        "id": row.id,
        "service": row.service_name,
        "event_type": row.event_type,
        "key": row.message_key,
        "status": row.status.value,
        "attempts": row.retry_count,
        "max_retry": row.max_retry,
        "last_error": row.last_error,
        "payload": payload,
        "topic": row.topic,
        "traceparent": row.traceparent,
        **{
            k: times[k]
            for k in ("created_at", "updated_at", "published_at", "consumed_at", "next_retry_at")
        },
    }
