"""What a bench run is asked to do (``BenchConfig``), what it measured (``BenchResult`` and
its one BENCH line), and the progress bar it draws on a terminal."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

EVENT = "chat_history.persist"
SERVICE = "agent"
KEYS = 64
BENCH_HANDLER_MODULES = "handlers,outbox_app.devtools.bench.handlers"
ORDERED_KEYS = (1000, 10)  # the ordered drains: over many keys, and over few


@dataclass
class BenchConfig:
    n: int = 50_000
    write_tx: int = 2_000
    live_rate: float = 500.0
    live_seconds: float = 30.0
    workers: int = 1
    # More live rates after the first (a p99 each), and more worker counts for the drain
    # (each against the first count's drain, in the same run).
    more_live_rates: tuple[float, ...] = ()
    scale: tuple[int, ...] = ()
    split_roles: bool = False  # the drain again with a relay-only and a consume-only worker
    partitions: int = 4
    database_url: str | None = None
    broker: str = "kafka"  # kafka | tansu: what is started for the run
    broker_url: str | None = None  # a running broker instead
    json_path: str | None = None
    timeout: float = 600.0


@dataclass
class BenchResult:
    n: int
    workers: int
    broker: str = "kafka"
    write_tps: float = 0.0
    drain_eps: float = 0.0
    drain_vs_limit: float = 0.0
    live_rate: float = 0.0
    p50_ms: float = 0.0
    p95_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    start_s: float = 0.0
    lost: int = 0
    doubled: int = 0
    kafka_limit_eps: float = 0.0
    db_limit_eps: float = 0.0
    faust_limit_eps: float = 0.0  # an empty agent with the worker's transport and settings
    drain_vs_faust: float = 0.0
    cpu_us_per_event: float = 0.0  # the workers' user+system CPU during the drain, per event
    db_round_trips_per_event: float = 0.0  # statements the server ran during the drain
    load_cpu_share: float = 0.0  # of one core: the live phase's load generator process
    partitions: int = 4
    # the ordered service: drains over 1000 keys and over 10, and its live latency
    ordered_drain_eps: float = 0.0
    ordered_10_keys_drain_eps: float = 0.0
    ordered_p50_ms: float = 0.0
    ordered_p99_ms: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        return (
            f"BENCH n={self.n} workers={self.workers} partitions={self.partitions} "
            f"broker={self.broker} "
            f"write_tps={self.write_tps:.0f} "
            f"drain_eps={self.drain_eps:.0f} drain_vs_limit={self.drain_vs_limit:.2f} "
            f"live_rate={self.live_rate:g} p50_ms={self.p50_ms:.1f} p95_ms={self.p95_ms:.1f} "
            f"p99_ms={self.p99_ms:.1f} max_ms={self.max_ms:.1f} start_s={self.start_s:.1f} "
            f"lost={self.lost} doubled={self.doubled} "
            f"kafka_limit_eps={self.kafka_limit_eps:.0f} db_limit_eps={self.db_limit_eps:.0f} "
            f"faust_limit_eps={self.faust_limit_eps:.0f} drain_vs_faust={self.drain_vs_faust:.2f} "
            f"cpu_us_per_event={self.cpu_us_per_event:.0f} "
            f"db_round_trips_per_event={self.db_round_trips_per_event:.2f} "
            f"load_cpu_share={self.load_cpu_share:.2f} "
            f"ordered_drain_eps={self.ordered_drain_eps:.0f} "
            f"ordered_10_keys_drain_eps={self.ordered_10_keys_drain_eps:.0f} "
            f"ordered_p50_ms={self.ordered_p50_ms:.1f} ordered_p99_ms={self.ordered_p99_ms:.1f}"
            + "".join(f" {k}={v}" for k, v in self.extra.items())
        )


class Progress:
    """A one-line progress bar on a terminal; silent otherwise."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()

    def update(self, phase: str, done: float, total: float) -> None:
        if not self.tty or total <= 0:
            return
        width = 30
        filled = int(width * min(done / total, 1.0))
        sys.stderr.write(
            f"\r{phase:<7} [{'#' * filled}{'.' * (width - filled)}] {done:>8.0f}/{total:.0f}"
        )
        sys.stderr.flush()

    def done(self, phase: str, summary: str) -> None:
        if self.tty:
            sys.stderr.write("\r" + " " * 70 + "\r")
        print(f"{phase:<7} {summary}", file=sys.stderr, flush=True)


def chat(i: int) -> dict[str, Any]:
    """The payload of the bench's events: a chat message of a realistic size."""
    return {
        "user_id": i % 1000,
        "conversation_id": f"conv-{i % KEYS}",
        "role": "user" if i % 2 else "assistant",
        "message": f"benchmark message {i}: the quick brown fox jumps over the lazy dog",
    }
