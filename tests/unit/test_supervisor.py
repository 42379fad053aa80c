"""The consumer agents' supervisor (found by the soak: a worker exited with code 1 after
an ordinary rebalance, because mode's restart bucket holds a single token)."""

from __future__ import annotations

import asyncio

import pytest
from mode.exceptions import MaxRestartsExceeded
from mode.supervisors import OneForOneSupervisor

from outbox_app.worker.compat.supervisor import AgentSupervisor
from tests.support import one_service_app


async def restarts(supervisor: OneForOneSupervisor, n: int) -> None:
    """``n`` restarts in a burst, as a rebalance revoking n partitions causes."""
    for _ in range(n):
        async with supervisor._bucket:
            pass


def test_the_trap_modes_bucket_allows_one_restart_at_a_time() -> None:
    default = OneForOneSupervisor(max_restarts=100.0, over=1.0)
    with pytest.raises(MaxRestartsExceeded):
        asyncio.run(restarts(default, 2))


def test_a_burst_of_restarts_up_to_the_limit_is_fine() -> None:
    supervisor = AgentSupervisor(max_restarts=100.0, over=1.0)
    asyncio.run(restarts(supervisor, 100))
    with pytest.raises(MaxRestartsExceeded):  # a real crash loop still stops
        asyncio.run(restarts(supervisor, 50))


def test_consumer_agents_use_it(tmp_path) -> None:  # type: ignore[no-untyped-def]
    app = one_service_app(tmp_path)
    try:
        agents = list(app.agents.values())
        assert agents and all(a.supervisor_strategy is AgentSupervisor for a in agents)
    finally:
        app.runtime.close()
