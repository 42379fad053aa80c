"""What a soak is asked to do (``SoakConfig``), what it found (``SoakResult`` and its SOAK
line), and the fixed parts of its set-up."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Fault kinds, in the order the SOAK line lists them; which apply depends on the broker.
FAULT_KINDS = (
    "kill",
    "stop",
    "broker",
    "broker-kill",
    "broker-bounce",
    "dbconn",
    "dbrestart",
    "handler",
    "poison",
)
BROKERS = ("kafka-cluster", "kafka", "tansu")
# Tansu keeps everything in memory: its fault is a restart that loses it all. Kafka keeps
# its data: a node is SIGKILLed and restarted on it, or all are restarted one by one.
BROKER_FAULTS = {
    "tansu": ("broker",),
    "kafka": ("broker-kill", "broker-bounce"),
    "kafka-cluster": ("broker-kill", "broker-bounce"),
}
SERVICES = ("agent", "memory", "soak", "soak_seq", "task")
STREAMS_PER_PRODUCER = 20  # ordered keys of soak.step, each owned by one producer thread
DOOMED_STEP_SHARE = 0.03
HANDLER_MODULES = "handlers,outbox_app.devtools.soak.handlers"
SESSION_TIMEOUT_S = 6.0
DOOMED_MAX_RETRY = 3
USERS = 200
MEMORY_KEYS = 10


@dataclass
class SoakConfig:
    seconds: float = 60.0
    rate: float = 300.0
    workers: int = 2
    faults: tuple[str, ...] | None = None  # None: every kind that applies to the broker
    broker: str = "kafka-cluster"
    fault_interval: float = 5.0
    warmup: float = 8.0  # no faults before the workers have joined their groups
    rollback_share: float = 0.05
    handler_failure_rate: float = 0.3
    db_restarts: int | None = None  # at most this many; default: unlimited on a private server
    mysql_url: str | None = None  # default: a private mariadbd the soak may restart at will
    drain_timeout: float = 180.0
    drain_target: float = 30.0
    producers: int = 3
    seed: int | None = None
    json_path: str | None = None
    keep: bool = False
    quiet: bool = False

    def __post_init__(self) -> None:
        if self.broker not in BROKERS:
            raise ValueError(f"unknown broker {self.broker!r}; choose from {', '.join(BROKERS)}")
        if self.faults is None:
            self.faults = faults_for(self.broker)

    @property
    def kinds(self) -> tuple[str, ...]:
        """The fault kinds of this soak."""
        return self.faults if self.faults is not None else faults_for(self.broker)


def faults_for(broker: str) -> tuple[str, ...]:
    """Every fault kind that applies to ``broker``."""
    others = {k for kinds in BROKER_FAULTS.values() for k in kinds} - set(BROKER_FAULTS[broker])
    return tuple(k for k in FAULT_KINDS if k not in others)


@dataclass
class SoakResult:
    events: int = 0
    rolled_back: int = 0
    consumed: int = 0
    dead: int = 0
    lost: int = 0
    doubled: int = 0
    out_of_order: int = 0  # ordered streams: effects committed before an earlier step's
    faults: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    drain_s: float | None = None
    transactions: int = 0
    failed_tx: int = 0
    ambiguous_tx: int = 0
    expected_dead: int = 0
    unexpected_dead: int = 0
    worker_exits: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    workdir: str = ""

    @property
    def ok(self) -> bool:
        return (
            self.lost == 0 and self.doubled == 0 and self.out_of_order == 0 and not self.violations
        )

    def line(self) -> str:
        faults = ",".join(f"{k}:{n}" for k, n in self.faults.items()) or "none"
        return (
            f"SOAK events={self.events} rolled_back={self.rolled_back} "
            f"consumed={self.consumed} dead={self.dead} lost={self.lost} "
            f"doubled={self.doubled} out_of_order={self.out_of_order} faults={faults} "
            f"seconds={self.seconds:.0f}"
        )


def parse_faults(raw: str, broker: str = "kafka-cluster") -> tuple[str, ...]:
    """The fault kinds named in ``raw`` (``all``: every one that applies to ``broker``)."""
    if broker not in BROKERS:
        raise ValueError(f"unknown broker {broker!r}; choose from {', '.join(BROKERS)}")
    allowed = faults_for(broker)
    if raw.strip().lower() in ("all", ""):
        return allowed
    if raw.strip().lower() == "none":
        return ()
    wanted = tuple(dict.fromkeys(p.strip().lower() for p in raw.split(",") if p.strip()))
    unknown = [k for k in wanted if k not in FAULT_KINDS]
    if unknown:
        raise ValueError(f"unknown fault(s) {', '.join(unknown)}; choose from {', '.join(allowed)}")
    wrong = [k for k in wanted if k not in allowed]
    if wrong:
        raise ValueError(
            f"fault(s) {', '.join(wrong)} do not apply to --broker {broker}; "
            f"choose from {', '.join(allowed)}"
        )
    return wanted
