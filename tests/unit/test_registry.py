from __future__ import annotations

from dataclasses import dataclass

import pytest

from outbox_app import (
    ConfigurationError,
    EventTypeConflict,
    HandlerContext,
    Registry,
    UnknownEventType,
)
from outbox_app.errors import UnknownService
from outbox_app.routing import Route


def test_default_route_names_table_topic_and_group():
    assert Route.default("agent") == Route("agent", "agent_outbox", "outbox.agent", "outbox-agent")


def test_routes_can_be_overridden():
    reg = Registry()
    reg.add_service("memory", table="mem_events", topic="prod.memory", group="mem-workers")
    reg.register_event("memory.upsert", "memory")
    assert reg.route_for_event("memory.upsert") == Route(
        "memory", "mem_events", "prod.memory", "mem-workers"
    )


def test_unknown_event_type_names_it():
    with pytest.raises(UnknownEventType, match="'nope'"):
        Registry().owner("nope")


def test_event_type_registered_to_two_services_names_both():
    reg = Registry()
    reg.register_event("task.created", "task")
    with pytest.raises(
        EventTypeConflict, match="'task.created' is owned by service 'task'.*'agent'"
    ):
        reg.register_event("task.created", "agent")
    assert reg.owner("task.created") == "task"


def test_failed_handler_registration_leaves_the_registry_unchanged():
    reg = Registry()
    reg.register_event("task.created", "task")
    with pytest.raises(EventTypeConflict):
        reg.handler("task.created", service="agent")(lambda ctx: None)
    assert reg.handler_for("task.created") is None
    assert reg.services == ["task"]


def test_duplicate_handler_is_refused_with_the_existing_ones_name():
    reg = Registry()

    @reg.handler("a.b", service="svc")
    def first(ctx):  # type: ignore[no-untyped-def]
        return None

    with pytest.raises(ConfigurationError, match="already has a handler: .*first"):
        reg.handler("a.b", service="svc")(lambda ctx: None)


def test_consumed_service_without_handler_is_refused():
    reg = Registry()
    reg.register_event("notification.requested", "notification")
    with pytest.raises(
        ConfigurationError, match="'notification.requested' of service 'notification'"
    ):
        reg.check_consumable(["notification"])


def test_unknown_service_lists_the_known_ones():
    reg = Registry()
    reg.register_event("a.b", "agent")
    with pytest.raises(UnknownService, match="'nope'; known services: agent"):
        reg.resolve_services(["nope"])
    assert reg.resolve_services(["all"]) == ["agent"]


@pytest.mark.parametrize("name", ["Agent", "1x", "a-b", "", "x" * 49])
def test_bad_service_names_are_refused(name):
    with pytest.raises(ConfigurationError, match="invalid service name"):
        Registry().register_event("a.b", name)


@dataclass
class Chat:
    user_id: int
    message: str
    role: str = "user"


def test_payload_type_conflict_is_refused():
    reg = Registry()
    reg.register_event("chat", "agent", Chat)

    @dataclass
    class Other:
        x: int

    with pytest.raises(ConfigurationError, match="already has payload type Chat"):
        reg.register_event("chat", "agent", Other)


def test_snapshot_and_restore_forget_later_registrations():
    reg = Registry()
    reg.register_event("a.b", "agent")
    snap = reg.snapshot()
    reg.register_event("x.y", "extra")
    reg.restore(snap)
    assert reg.services == ["agent"] and reg.event_types() == ["a.b"]


def test_an_async_handler_is_refused_at_registration_saying_what_to_do() -> None:
    reg = Registry()

    async def handle(ctx: HandlerContext) -> None:
        pass

    with pytest.raises(
        ConfigurationError, match="is async def.*must be plain functions.*after_commit"
    ):
        reg.handler("x.async", service="svc")(handle)
    assert reg.handler_for("x.async") is None and reg.services == []


def test_after_commit_must_be_async() -> None:
    reg = Registry()

    def not_async(event: object, result: object) -> None:
        pass

    with pytest.raises(ConfigurationError, match="after_commit of .* must be an async def"):
        reg.handler("x.remote", service="svc", after_commit=not_async)(lambda ctx: None)  # type: ignore[arg-type]
    assert reg.handler_for("x.remote") is None
