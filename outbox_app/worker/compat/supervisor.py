"""The supervisor of the consumer agents' actors.

With ``isolated_partitions`` every rebalance cancels the actors of revoked partitions,
and Faust restarts each through its agent's supervisor, rate-limited to "100 restarts
over 1 s". But mode's token bucket takes ``over`` as its capacity: it holds one token,
so two restarts within 10 ms raise ``MaxRestartsExceeded`` and the supervisor turns it
into ``SystemExit(1)``: the worker exited after an ordinary rebalance (found by the
soak). This supervisor keeps the intended limit: a burst of up to ``max_restarts``.
"""

from __future__ import annotations

from typing import Any

from mode.supervisors import OneForOneSupervisor
from mode.utils.times import rate_limit


class AgentSupervisor(OneForOneSupervisor):
    def __init__(self, *services: Any, **kwargs: Any) -> None:
        super().__init__(*services, **kwargs)
        # capacity (mode's ``over`` argument) = max_restarts, refilled at max_restarts/over
        self._bucket = rate_limit(
            self.max_restarts / max(self.over, 1e-9),
            self.max_restarts,
            raises=self.raises,
        )
