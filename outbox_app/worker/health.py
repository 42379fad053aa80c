"""What a worker depends on (the broker, the database), whether it answers now, and since
when it does not: the relay and the consumers report here, the log, the metrics and the
dashboard read it. An outage pauses the work; it spends no event's attempts."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


@dataclass
class Dependency:
    name: str
    down_since: float | None = None  # wall clock (epoch seconds)
    reason: str = ""
    outages: int = 0

    @property
    def up(self) -> bool:
        return self.down_since is None

    def failed(self, reason: str) -> bool:
        """Record a failure; True when this starts an outage (log it then, once)."""
        self.reason = reason
        if self.down_since is not None:
            return False
        self.down_since = time.time()
        self.outages += 1
        return True

    def answered(self) -> float | None:
        """Record a success; the length of the outage it ends, if one."""
        if self.down_since is None:
            return None
        lasted = time.time() - self.down_since
        self.down_since, self.reason = None, ""
        return lasted

    def as_dict(self) -> dict[str, Any]:
        return {
            "up": self.up,
            "down_since": None if self.down_since is None else round(self.down_since, 3),
            "reason": self.reason or None,
            "outages": self.outages,
        }


@dataclass
class Health:
    broker: Dependency = field(default_factory=lambda: Dependency("broker"))
    database: Dependency = field(default_factory=lambda: Dependency("database"))

    def dependencies(self) -> list[Dependency]:
        return [self.broker, self.database]

    def as_dict(self) -> dict[str, Any]:
        return {d.name: d.as_dict() for d in self.dependencies()}
