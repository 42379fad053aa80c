"""What a phase cost, read from outside the processes: the CPU time of processes (from
``/proc``, Linux) and the statements the database server executed (MySQL/MariaDB)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, event, text

TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU seconds of these processes so far (0 for one that is gone)."""
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                # The command name may hold spaces: fields are counted after its ")".
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        total += (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime
    return total


def machine_ticks() -> tuple[int, int] | None:
    """(idle, total) CPU ticks of the whole machine so far, from ``/proc/stat``."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return fields[3] + fields[4], sum(fields[:8])  # idle + iowait; up to steal


@dataclass
class CpuMeter:
    """CPU of some processes over a span of wall time, and the whole machine's idle share
    over the same span."""

    pids: list[int]
    cpu0: float = 0.0
    wall0: float = 0.0
    ticks0: tuple[int, int] | None = None

    def start(self) -> CpuMeter:
        self.cpu0, self.wall0 = cpu_seconds(self.pids), time.monotonic()
        self.ticks0 = machine_ticks()
        return self

    def used(self) -> tuple[float, float]:
        """(CPU seconds, wall seconds) since ``start``."""
        return cpu_seconds(self.pids) - self.cpu0, time.monotonic() - self.wall0

    def idle_share(self) -> float | None:
        """The machine's idle share since ``start`` (None without ``/proc/stat``)."""
        ticks = machine_ticks()
        if ticks is None or self.ticks0 is None or ticks[1] <= self.ticks0[1]:
            return None
        return (ticks[0] - self.ticks0[0]) / (ticks[1] - self.ticks0[1])


SERVER_NAMES = ("mariadbd", "mysqld")


def server_pids(engine: Engine) -> list[int]:
    """The database server's processes when it runs on this machine: from its pid file,
    or, where that is not readable (it belongs to the server's user), by process name.
    Empty for a remote server, whose CPU cannot be read from /proc."""
    if engine.dialect.name not in ("mysql", "mariadb"):
        return []
    if engine.url.host not in (None, "", "127.0.0.1", "localhost", "::1"):
        return []
    with engine.connect() as conn:
        pid_file = conn.execute(text("SELECT @@pid_file")).scalar_one()
    try:
        with open(str(pid_file)) as f:
            return [int(f.read().strip())]
    except (OSError, ValueError):
        pass
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/comm") as f:
                if f.read().strip() in SERVER_NAMES:
                    found.append(int(entry))
        except (OSError, ValueError):
            continue
    return found


def server_statements(engine: Engine) -> int | None:
    """Statements the server executed so far (``Questions``: every client's), or None
    where there is no such counter (SQLite)."""
    if engine.dialect.name not in ("mysql", "mariadb"):
        return None
    with engine.connect() as conn:
        row = conn.execute(text("SHOW GLOBAL STATUS LIKE 'Questions'")).first()
    return int(row[1]) if row is not None else None


class OwnStatements:
    """Statements this process sends through ``engine`` (the bench's own polls), so that
    they can be taken out of the server's count."""

    def __init__(self, engine: Engine) -> None:
        self.count = 0
        event.listen(engine, "before_cursor_execute", self._one)
        event.listen(engine, "commit", self._one)
        event.listen(engine, "rollback", self._one)
        event.listen(engine, "reset", self._one)  # the pool's rollback on return

    def _one(self, *args: Any, **kwargs: Any) -> None:
        self.count += 1


@dataclass
class DrainCost:
    """Started when a backlog is released, stopped when it drained: the workers' CPU and
    the database statements, per event."""

    engine: Engine
    own: OwnStatements
    pids: list[int]
    cpu_us_per_event: float = 0.0
    round_trips_per_event: float = 0.0
    db_cpu_us_per_event: float | None = None  # a server on this machine only
    idle_share: float | None = None  # of the whole machine's CPU during the drain

    def start(self) -> None:
        self._cpu = CpuMeter(self.pids).start()
        servers = server_pids(self.engine)
        self._db_cpu = CpuMeter(servers).start() if servers else None
        self._statements0 = server_statements(self.engine)
        self._own0 = self.own.count

    def stop(self, events: int) -> None:
        cpu, _ = self._cpu.used()
        self.cpu_us_per_event = cpu * 1e6 / max(events, 1)
        if self._db_cpu is not None:
            self.db_cpu_us_per_event = self._db_cpu.used()[0] * 1e6 / max(events, 1)
        self.idle_share = self._cpu.idle_share()
        after = server_statements(self.engine)
        if after is not None and self._statements0 is not None:
            own = self.own.count - self._own0 + 1  # and the SHOW STATUS just now
            self.round_trips_per_event = max(0, after - self._statements0 - own) / max(events, 1)
