"""The retry decision: after a failed attempt, wait how long, or go dead."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    """Quadratic backoff ``min(attempt, cap)^2`` seconds plus up to ``jitter`` of it."""

    cap: int = 10
    jitter: float = 0.2

    def delay(self, attempt: int, rand: float | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        base = float(min(max(attempt, 1), self.cap) ** 2)
        r = random.random() if rand is None else rand
        return base + base * self.jitter * r

    def next_step(self, retry_count: int, max_retry: int) -> float | None:
        """After a failure, with ``retry_count`` failures so far: the delay, or None (dead)."""
        attempt = retry_count + 1
        if attempt >= max_retry:
            return None
        return self.delay(attempt)


@dataclass
class Backoff:
    """Waits between tries of something that is down (a broker, a database): doubling
    from ``first`` up to ``cap`` seconds; ``reset`` once it answers."""

    first: float = 0.5
    cap: float = 10.0
    _next: float = 0.0

    def next(self) -> float:
        delay = self._next or self.first
        self._next = min(delay * 2, self.cap)
        return delay

    def reset(self) -> None:
        self._next = 0.0
