"""The registry: which service owns each event type, each service's route, and the
handlers. A failed registration leaves the registry as it was."""

from __future__ import annotations

import importlib
import inspect
import logging
import os
import pkgutil
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import MetaData

from outbox_app.context import Event, HandlerContext
from outbox_app.errors import (
    ConfigurationError,
    DuplicateHandler,
    EventTypeConflict,
    UnknownEventType,
    UnknownService,
)
from outbox_app.routing import Route, check_service_name

log = logging.getLogger(__name__)

HandlerFunc = Callable[[HandlerContext], Any]
AfterCommit = Callable[[Event, Any], Awaitable[None]]
F = TypeVar("F", bound=HandlerFunc)


@dataclass(frozen=True)
class HandlerSpec:
    event_type: str
    service: str
    func: HandlerFunc
    payload_type: Any = None
    # Refuse payloads with fields the type does not know (default: ignore them, so that a
    # publisher may add a field before every consumer knows it).
    strict: bool = False
    # Remote work run after the transaction commits; the row is consumed only once it
    # succeeds. Its database part (``func``) may run again on retry: key it by outbox id.
    after_commit: AfterCommit | None = None

    @property
    def name(self) -> str:
        return f"{self.func.__module__}.{getattr(self.func, '__qualname__', self.func)}"


def check_handler_functions(spec: HandlerSpec) -> None:
    """A handler runs in a worker thread inside the database transaction: it must be a plain
    function (an ``async def`` one would return a coroutine nobody awaits, its effect lost).
    Remote work goes in ``after_commit``, which must be ``async def``."""
    if inspect.iscoroutinefunction(spec.func) or inspect.isasyncgenfunction(spec.func):
        raise ConfigurationError(
            f"handler {spec.name} for {spec.event_type!r} is async def: handlers run inside the "
            "database transaction in a worker thread and must be plain functions (def). Put "
            "async remote work (HTTP calls, email) in after_commit=, which runs after the "
            "commit"
        )
    if not callable(spec.func):
        raise ConfigurationError(f"handler for {spec.event_type!r} is not callable: {spec.func!r}")
    after = spec.after_commit
    is_async = inspect.iscoroutinefunction(after) or inspect.iscoroutinefunction(
        getattr(after, "__call__", None)  # noqa: B004 - an object with an async __call__
    )
    if after is not None and not is_async:
        raise ConfigurationError(
            f"after_commit of {spec.name} for {spec.event_type!r} must be an async def "
            f"function taking (event, result), got {after!r}"
        )


class Registry:
    def __init__(self) -> None:
        self._owners: dict[str, str] = {}
        self._payload_types: dict[str, Any] = {}
        self._strict: set[str] = set()
        self._routes: dict[str, Route] = {}
        self._handlers: dict[str, HandlerSpec] = {}
        self._metadata: list[MetaData] = []
        self._loaded: set[str] = set()

    # -- services and event types -------------------------------------------------
    def add_service(
        self,
        service: str,
        *,
        table: str | None = None,
        topic: str | None = None,
        group: str | None = None,
        ordering: str | None = None,
    ) -> Route:
        """Declare a service (idempotent) and optionally override its route.
        ``ordering="key"`` makes the service keep per-key order (``outbox_app.ordering``)."""
        route = self._routes.get(service) or Route.default(service)
        if table or topic or group or ordering:
            route = route.override(table=table, topic=topic, group=group, ordering=ordering)
        self._routes[service] = route
        return route

    def register_event(
        self,
        event_type: str,
        service: str,
        payload_type: Any = None,
        *,
        strict: bool = False,
    ) -> None:
        if not event_type or not isinstance(event_type, str) or len(event_type) > 128:
            raise ConfigurationError(f"invalid event type {event_type!r} (1-128 characters)")
        check_service_name(service)
        owner = self._owners.get(event_type)
        if owner is not None and owner != service:
            raise EventTypeConflict(event_type, owner, service)
        known = self._payload_types.get(event_type)
        if payload_type is not None and known is not None and known is not payload_type:
            raise ConfigurationError(
                f"event type {event_type!r} (service {service!r}) already has payload type "
                f"{_name(known)}, not {_name(payload_type)}"
            )
        self.add_service(service)
        self._owners[event_type] = service
        if payload_type is not None:
            self._payload_types[event_type] = payload_type
        if strict:
            self._strict.add(event_type)

    def owner(self, event_type: str) -> str:
        try:
            return self._owners[event_type]
        except KeyError:
            raise UnknownEventType(event_type) from None

    def route(self, service: str) -> Route:
        try:
            return self._routes[service]
        except KeyError:
            raise UnknownService(service, list(self._routes)) from None

    def route_for_event(self, event_type: str) -> Route:
        return self._routes[self.owner(event_type)]

    def payload_type(self, event_type: str) -> Any:
        return self._payload_types.get(event_type)

    def strict(self, event_type: str) -> bool:
        return event_type in self._strict

    @property
    def services(self) -> list[str]:
        return sorted(self._routes)

    def event_types(self, service: str | None = None) -> list[str]:
        return sorted(e for e, s in self._owners.items() if service is None or s == service)

    def routes(self, services: Iterable[str] | None = None) -> list[Route]:
        names = self.services if services is None else list(services)
        return [self.route(s) for s in names]

    # -- handlers --------------------------------------------------------------------
    def handler(
        self,
        event_type: str,
        *,
        service: str,
        payload: Any = None,
        after_commit: AfterCommit | None = None,
        strict: bool = False,
    ) -> Callable[[F], F]:
        """Register ``func`` as the handler of ``event_type``, owned by ``service``.
        ``payload``: the type its payloads are validated as (a dataclass, a pydantic
        model...); ``strict``: refuse unknown fields (default: ignore them)."""

        def decorate(func: F) -> F:
            spec = HandlerSpec(event_type, service, func, payload, strict, after_commit)
            check_handler_functions(spec)
            existing = self._handlers.get(event_type)
            if existing is not None and existing.func is not func:
                raise DuplicateHandler(event_type, existing.name)
            self.register_event(event_type, service, payload, strict=strict)  # raises first
            self._handlers[event_type] = spec
            return func

        return decorate

    def handler_for(self, event_type: str) -> HandlerSpec | None:
        return self._handlers.get(event_type)

    def add_metadata(self, metadata: MetaData) -> MetaData:
        """Business tables of a handler module, created at worker start-up."""
        if metadata not in self._metadata:
            self._metadata.append(metadata)
        return metadata

    @property
    def metadata(self) -> list[MetaData]:
        return list(self._metadata)

    # -- tests -------------------------------------------------------------------------
    def snapshot(self) -> Registry:
        """A copy to ``restore`` later: lets tests register throwaway handlers in the
        default registry without leaking them into other tests."""
        copy = Registry()
        copy._owners, copy._payload_types = dict(self._owners), dict(self._payload_types)
        copy._strict = set(self._strict)
        copy._routes, copy._handlers = dict(self._routes), dict(self._handlers)
        copy._metadata, copy._loaded = list(self._metadata), set(self._loaded)
        return copy

    def restore(self, snapshot: Registry) -> None:
        self.__dict__.update(snapshot.snapshot().__dict__)

    # -- start-up --------------------------------------------------------------------
    def load_modules(self, names: Iterable[str]) -> None:
        """Import handler modules; a package is walked so each of its modules registers."""
        for name in names:
            if name in self._loaded:
                continue
            try:
                module = importlib.import_module(name)
            except ImportError as exc:
                raise ConfigurationError(
                    f"cannot import handler module {name!r} (OUTBOX_HANDLER_MODULES): {exc}"
                ) from exc
            for info in pkgutil.walk_packages(getattr(module, "__path__", []), f"{name}."):
                importlib.import_module(info.name)
            self._loaded.add(name)

    def check_consumable(self, services: Iterable[str]) -> None:
        """Refuse to consume a service whose event types lack handlers."""
        problems = []
        for service in services:
            self.route(service)
            for event_type in self.event_types(service):
                if event_type not in self._handlers:
                    problems.append(
                        f"event type {event_type!r} of service {service!r} has no handler"
                    )
        if problems:
            raise ConfigurationError("; ".join(problems))

    def resolve_services(self, wanted: Iterable[str]) -> list[str]:
        names = list(wanted)
        if not names or names == ["all"]:
            if not self._routes:
                raise ConfigurationError("no services are registered: check OUTBOX_HANDLER_MODULES")
            return self.services
        for name in names:
            self.route(name)
        return sorted(set(names))


default_registry = Registry()


def handler(
    event_type: str,
    *,
    service: str,
    payload: Any = None,
    after_commit: AfterCommit | None = None,
    strict: bool = False,
) -> Callable[[F], F]:
    """Register a handler in the default registry (see ``Registry.handler``)."""
    return default_registry.handler(
        event_type, service=service, payload=payload, after_commit=after_commit, strict=strict
    )


def _name(t: Any) -> str:
    return getattr(t, "__name__", None) or repr(t)


def load_handlers(*modules: str, registry: Registry | None = None) -> Registry:
    """Import the handler modules (a package is walked), so that ``publish()`` knows their
    event types and services: what a publishing service calls once at start-up. Without
    names, the modules of ``OUTBOX_HANDLER_MODULES`` (default ``handlers``)."""
    reg = registry or default_registry
    names = modules or tuple(
        m.strip() for m in os.environ.get("OUTBOX_HANDLER_MODULES", "handlers").split(",")
    )
    reg.load_modules([m for m in names if m])
    return reg
