"""Outbox pages on the Faust web server (default port 6066).

- ``/outbox/``: the dashboard; ``/outbox/static/<name>``: its assets
- ``GET /outbox/stats/``: the stats document (same as ``outbox-app stats --json``)
- ``GET /outbox/api/series/?since=``: recent samples with rates, for the charts
- ``GET /outbox/dead/?service=&event_type=&limit=&offset=``: dead letters, newest first
- ``GET /outbox/messages/<service>/<id>/``: one outbox row
- ``POST /outbox/dead/requeue/``: needs the admin token (``X-Outbox-Admin-Token``)
- ``POST /outbox/dead/skip/``: ordered services: a dead head skipped (admin token)
- ``GET /outbox/blocked/?service=``: ordered keys waiting for their head
- ``GET /outbox/dead/groups/?service=``: dead letters grouped by failure signature
- ``GET /outbox/lag/``: consumer lag per partition, from the broker (cached)
- ``GET /outbox/api/access/``: what the sent token opens (payloads, admin)
- ``GET /metrics``: Prometheus

Each view is thin: ``WebApi`` does the work, ``install`` binds it to one app.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Mapping
from typing import Any, ClassVar

import faust
from faust.web import Request, Response, View

from outbox_app.ops.web import dashboard
from outbox_app.ops.web.api import WebApi
from outbox_app.ops.web.params import ApiError
from outbox_app.worker.runtime import Runtime

log = logging.getLogger(__name__)

JSON_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


class OutboxView(View):
    api: ClassVar[WebApi]  # set on the per-app subclass made by install()

    async def answer(self, work: Awaitable[Any]) -> Response:
        """Run the work and answer JSON; errors become ``{"error": message}``."""
        try:
            doc = await work
        except ApiError as exc:
            return self.error(exc.status, exc.message, headers=dict(JSON_HEADERS))
        except Exception:
            log.exception("web: %s failed", type(self).__name__)
            return self.error(500, "internal error; see the worker log", headers=dict(JSON_HEADERS))
        return self.json(doc, headers=dict(JSON_HEADERS))


class DashboardPage(OutboxView):
    async def get(self, request: Request) -> Response:
        page = dashboard.render_page(self.api.page_config())
        return self.html(page, headers=dict(dashboard.SECURITY_HEADERS))


class DashboardRedirect(View):
    async def get(self, request: Request) -> Response:
        return self.text("", status=302, headers={"Location": "/outbox/"})


class StaticAsset(OutboxView):
    async def get(self, request: Request, name: str) -> Response:
        found = dashboard.asset(name)
        if found is None:
            return self.error(404, f"no asset {name!r}")
        body, kind = found
        headers = {"Cache-Control": "max-age=300", "X-Content-Type-Options": "nosniff"}
        return self.bytes(body, content_type=kind, headers=headers)


class Stats(OutboxView):
    async def get(self, request: Request) -> Response:
        return await self.answer(self.api.stats())


class Series(OutboxView):
    async def get(self, request: Request) -> Response:
        return await self.answer(self.api.series(_query(request)))


class DeadLetters(OutboxView):
    async def get(self, request: Request) -> Response:
        return await self.answer(self.api.dead(_query(request), _headers(request)))


class Skip(OutboxView):
    async def post(self, request: Request) -> Response:
        body = await self.read_request_content(request)
        headers = _headers(request)
        return await self.answer(self.api.skip(headers, body, getattr(request, "remote", None)))


class Blocked(OutboxView):
    async def get(self, request: Request) -> Response:
        return await self.answer(self.api.blocked(_query(request)))


class DeadGroups(OutboxView):
    async def get(self, request: Request) -> Response:
        return await self.answer(self.api.dead_groups(_query(request)))


class Lag(OutboxView):
    async def get(self, request: Request) -> Response:
        return await self.answer(self.api.lag())


class Access(OutboxView):
    async def get(self, request: Request) -> Response:
        remote = getattr(request, "remote", None)
        return await self.answer(self.api.access(_headers(request), remote))


class Message(OutboxView):
    async def get(self, request: Request, service: str, outbox_id: str) -> Response:
        return await self.answer(self.api.message(service, outbox_id, _headers(request)))


class Requeue(OutboxView):
    async def post(self, request: Request) -> Response:
        body = await self.read_request_content(request)
        headers = _headers(request)
        return await self.answer(self.api.requeue(headers, body, getattr(request, "remote", None)))


class PrometheusMetrics(OutboxView):
    async def get(self, request: Request) -> Response:
        try:
            body, content_type = await self.api.metrics(_headers(request).get("Accept"))
        except Exception:
            log.exception("web: /metrics failed")
            return self.text("internal error; see the worker log\n", status=500)
        # Set as a header: aiohttp refuses a charset inside ``content_type``.
        return self.bytes(body, headers={"Content-Type": content_type})


ROUTES: list[tuple[str, type[View]]] = [
    ("/outbox", DashboardRedirect),
    ("/outbox/", DashboardPage),
    ("/outbox/static/{name}", StaticAsset),
    ("/outbox/stats/", Stats),
    ("/outbox/api/series/", Series),
    ("/outbox/dead/", DeadLetters),
    ("/outbox/dead/requeue/", Requeue),
    ("/outbox/dead/skip/", Skip),
    ("/outbox/dead/groups/", DeadGroups),
    ("/outbox/blocked/", Blocked),
    ("/outbox/lag/", Lag),
    ("/outbox/api/access/", Access),
    ("/outbox/messages/{service}/{outbox_id}/", Message),
    ("/metrics", PrometheusMetrics),
]


def install(app: faust.App, runtime: Runtime) -> WebApi:
    """Register the outbox pages on ``app``'s web server, bound to ``runtime``."""
    api = WebApi(runtime, app.conf.id)
    for path, view in ROUTES:
        # A subclass per app, so two apps in one process never share an api.
        bound = type(view.__name__, (view,), {"api": api}) if issubclass(view, OutboxView) else view
        app.page(path, name=f"outbox.{view.__name__}")(bound)

    async def close_api(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        await api.close()  # the lag probe's Kafka clients

    app.on_before_shutdown.connect(close_api)
    return api


def _query(request: Request) -> dict[str, str]:
    return dict(request.query)  # type: ignore[attr-defined]


def _headers(request: Request) -> Mapping[str, str]:
    # aiohttp's CIMultiDictProxy: header names stay case-insensitive (a dict would not).
    headers: Mapping[str, str] = request.headers  # type: ignore[attr-defined]
    return headers
