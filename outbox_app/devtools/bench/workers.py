"""The worker processes of a bench run, and waiting on the database with a deadline while
checking that none of them died."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

from outbox_app.devtools.bench.config import BENCH_HANDLER_MODULES, SERVICE
from outbox_app.devtools.bench.handlers import ORDERED_SERVICE
from outbox_app.devtools.ports import free_port


class Workers:
    def __init__(self, tmp: Path, timeout: float) -> None:
        self.tmp = tmp
        self.timeout = timeout
        self.procs: list[subprocess.Popen[bytes]] = []
        # One consumer group for every start: workers started again go on from its offsets.
        self.app_id = f"outbox-bench-{uuid.uuid4().hex[:6]}"
        self._started = 0

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def start(
        self,
        count: int,
        database_url: str,
        broker_env: dict[str, str],
        roles: str | None = None,
    ) -> None:
        """``count`` more workers; ``roles`` is their ``OUTBOX_ROLES`` (default: both)."""
        app_id = self.app_id
        for _ in range(count):
            k = self._started
            self._started += 1
            env = dict(os.environ)  # OUTBOX_* tuning passes through; these are the bench's
            env.update(
                OUTBOX_DATABASE_URL=database_url,
                OUTBOX_SERVICES=f"{SERVICE},{ORDERED_SERVICE}",
                OUTBOX_HANDLER_MODULES=BENCH_HANDLER_MODULES,
                OUTBOX_APP_ID=app_id,
                OUTBOX_WEB_PORT=str(free_port()),
                OUTBOX_WEB_HOST="127.0.0.1",
                OUTBOX_SESSION_TIMEOUT="6",
                OUTBOX_HEARTBEAT_INTERVAL="1",
                OUTBOX_DATADIR=str(self.tmp / f"worker-{k}"),
                OUTBOX_LOG_LEVEL="warn",
                **broker_env,
            )
            if roles is not None:
                env["OUTBOX_ROLES"] = roles
            log = open(self.tmp / f"worker-{k}.log", "wb")  # noqa: SIM115 - lives with the process
            self.procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "outbox_app", "worker"],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )

    def wait(self, condition: Callable[[], bool], what: str, interval: float = 0.05) -> None:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if condition():
                return
            for k, proc in enumerate(self.procs):
                if proc.poll() is not None:
                    raise RuntimeError(f"worker {k} exited; log: {self.tmp / f'worker-{k}.log'}")
            time.sleep(interval)
        raise TimeoutError(f"bench: timed out waiting for {what}; worker logs in {self.tmp}")

    def stop(self) -> None:
        for proc in self.procs:
            with suppress(ProcessLookupError):
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.procs = []
