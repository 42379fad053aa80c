"""What the outbox endpoints do, apart from HTTP plumbing: each method takes the
request's inputs and returns a JSON document or raises ``ApiError``.

Database work runs through the runtime's executor, never on the event loop.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from outbox_app.errors import DatabaseUnavailable, OutboxError
from outbox_app.ops.operations import MAX_GROUPS, MAX_PAGE, Operations, row_document
from outbox_app.ops.web import params, prom
from outbox_app.ops.web.auth import HEADER, READ_HEADER, AdminGate, ReadGate
from outbox_app.ops.web.sampler import StatsSampler
from outbox_app.worker.kafka import KafkaAccess
from outbox_app.worker.lag import LagMonitor, LagProbe
from outbox_app.worker.runtime import Runtime

log = logging.getLogger(__name__)

T = TypeVar("T")


class WebApi:
    def __init__(self, runtime: Runtime, app_id: str) -> None:
        self.rt = runtime
        self.app_id = app_id
        # The worker's own stores: the web view serves the services this worker owns.
        self.ops = Operations(runtime.registry, {s: runtime.stores[s] for s in runtime.services})
        s = runtime.settings
        self.gate = AdminGate(s.admin_token)
        self.readers = ReadGate(s.read_token, s.admin_token, s.web_host)
        prom.prime(runtime.metrics, self.ops.services)
        self.sampler = StatsSampler(
            lambda: self._db(self.ops.stats),
            on_sample=lambda stats: prom.update_gauges(runtime.metrics, stats),
            latencies=runtime.metrics.recent_end_to_end.take,
        )
        # The group is the app id (Faust's consumer group); the topics carry the prefix.
        self.lag_probe = LagProbe(KafkaAccess.from_settings(s), app_id, runtime.topics)
        self.lag_monitor = LagMonitor(self.lag_probe)

    async def close(self) -> None:
        await self.lag_monitor.close()
        await self.lag_probe.close()

    async def _db(self, func: Callable[..., T], *args: Any) -> T:
        if not self.rt.ready.is_set():
            raise params.ApiError(503, "the worker is starting: the database is not ready yet")
        try:
            return await self.rt.executor.run(func, *args)
        except DatabaseUnavailable:
            raise params.ApiError(503, "the database is unavailable; see the worker log") from None
        except OutboxError as exc:  # unknown service or event type, bad input
            raise params.bad(str(exc)) from None

    # -- reading -------------------------------------------------------------------------
    async def stats(self) -> dict[str, Any]:
        return (await self.sampler.latest()).stats

    async def series(self, query: Mapping[str, str]) -> dict[str, Any]:
        since = params.query_float(query, "since", 0.0)
        latest = await self.sampler.latest(max_age_s=1.0)
        return {
            "now": round(latest.t, 3),
            "stats": latest.stats,
            "health": self.rt.health.as_dict(),
            "points": self.sampler.points(since),
        }

    async def dead(
        self, query: Mapping[str, str], headers: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        limit, offset = params.page(query)
        service = self._service(params.query_str(query, "service"))
        event_type = params.query_str(query, "event_type")
        doc = await self._db(self.ops.dead_page, service, limit, offset, event_type)
        if not self.readers.allowed(headers or {}):
            for item in doc["items"]:  # the failure stays visible, the business data not
                item["payload"], item["payload_hidden"] = None, True
        return doc

    async def message(
        self, service: str, raw_id: str, headers: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        self.readers.check(headers or {})
        outbox_id = params.outbox_id(raw_id)
        service = self._service(service)
        row = await self._db(self.ops.message, service, outbox_id)
        if row is None:
            raise params.ApiError(404, f"no outbox row {outbox_id} in service {service!r}")
        return row_document(row)

    # -- changing ------------------------------------------------------------------------
    async def requeue(
        self, headers: Mapping[str, str], body: bytes, remote: str | None
    ) -> dict[str, Any]:
        self.gate.check(headers, remote)  # before reading anything else from the caller
        req = params.requeue_request(body)
        service = req.service
        if service is None:
            assert req.event_type is not None  # requeue_request demands one of the two
            service = await self._db(self.ops.check_event_type, req.event_type)
        service = self._service(service)
        if req.signature is not None:
            doc = await self._db(self.ops.requeue_signature_document, service, req.signature)
            what = "a failure signature"
        else:
            doc = await self._db(self.ops.requeue_document, service, req.ids, req.event_type)
            what = "ids" if req.ids is not None else req.event_type or "all dead"
        log.info(
            "web: requeue of service %s by %s (%s): %d row(s)",
            service,
            remote or "?",
            what,
            doc["count"],
        )
        return doc

    async def skip(
        self, headers: Mapping[str, str], body: bytes, remote: str | None
    ) -> dict[str, Any]:
        self.gate.check(headers, remote)
        service, ids = params.skip_request(body)
        service = self._service(service)
        doc = await self._db(self.ops.skip_document, service, ids)
        log.info("web: skip in service %s by %s: %d row(s)", service, remote or "?", doc["count"])
        return doc

    async def blocked(self, query: Mapping[str, str]) -> dict[str, Any]:
        limit = params.query_int(query, "limit", 50, 1, MAX_PAGE)
        service = self._service(params.query_str(query, "service"))
        return await self._db(self.ops.blocked_page, service, limit)

    async def dead_groups(self, query: Mapping[str, str]) -> dict[str, Any]:
        # Signatures, counts and one sample error per group: never a payload.
        limit = params.query_int(query, "limit", 100, 1, MAX_GROUPS)
        service = self._service(params.query_str(query, "service"))
        return await self._db(self.ops.dead_groups, service, limit)

    async def lag(self) -> dict[str, Any]:
        report = await self.lag_monitor.report()
        prom.update_lag(self.rt.metrics, report)
        return report.as_dict(self.app_id)

    async def access(self, headers: Mapping[str, str], remote: str | None) -> dict[str, Any]:
        """What the caller's token opens (the dashboard asks once a token is entered)."""
        payloads, admin = self.readers.allowed(headers), self.gate.accepts(headers)
        if not (payloads or admin) and (headers.get(READ_HEADER) or headers.get(HEADER)):
            log.warning("web: a token that opens nothing was tried from %s", remote or "?")
        return {"payloads": payloads, "admin": admin, "admin_enabled": self.gate.enabled}

    # -- prometheus ----------------------------------------------------------------------
    async def metrics(self, accept: str | None) -> tuple[bytes, str]:
        prom.update_health(self.rt.metrics, self.rt.health)
        prom.update_lag(self.rt.metrics, await self.lag_monitor.report())
        try:
            await self.sampler.latest(max_age_s=1.0)
        except params.ApiError as exc:
            log.warning("web: /metrics without row gauges: %s", exc.message)
            prom.forget_gauges(self.rt.metrics)
        return prom.render(self.rt.metrics, accept)

    # -- helpers -------------------------------------------------------------------------
    def page_config(self) -> dict[str, Any]:
        """What the dashboard needs to know up front; nothing secret."""
        return {
            "app_id": self.app_id,
            "services": self.ops.services,
            "event_types": {s: self.rt.registry.event_types(s) for s in self.ops.services},
            "admin_enabled": self.gate.enabled,
            "payloads_open": self.readers.open,
            "ordered": [s for s in self.ops.services if self.rt.registry.route(s).ordered],
        }

    def _service(self, service: str | None) -> str:
        served = self.ops.services
        if service is None:
            if len(served) == 1:
                return served[0]
            raise params.bad(f"service is required; served here: {', '.join(served)}")
        if service not in served:
            known = self.rt.registry.services
            where = "unknown service" if service not in known else "service not served here"
            raise params.bad(f"{where} {service!r}; served here: {', '.join(served)}")
        return service
