"""Test helpers: brokers (Apache Kafka by default, Tansu on request), worker processes,
waiting on conditions."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from outbox_app.devtools.kafka import KafkaCluster
from outbox_app.devtools.ports import free_port, port_open, wait_until  # noqa: F401 - tests import them from here
from outbox_app.devtools.tansu import TANSU_TOPIC_RECHECK, TansuProcess

ROOT = Path(__file__).resolve().parent.parent


def wait_for(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll ``condition`` until it returns something truthy, or fail the test after ``timeout``."""
    try:
        return wait_until(what, condition, timeout, interval)
    except TimeoutError as exc:
        raise AssertionError(str(exc)) from None


# -- brokers -----------------------------------------------------------------------------------
# OUTBOX_TEST_BROKER=kafka (the default): one Apache Kafka node for the whole session, tests
# kept apart by topic prefixes. OUTBOX_TEST_BROKER=tansu: the embedded broker, one per module.
TEST_BROKER = os.environ.get("OUTBOX_TEST_BROKER", "kafka").strip().lower()
if TEST_BROKER not in ("kafka", "tansu"):
    raise RuntimeError(f"OUTBOX_TEST_BROKER must be kafka or tansu, got {TEST_BROKER!r}")


class TestBroker:
    """What a test needs of a broker: where it is, and how to take it away and back."""

    __test__ = False  # not a test class, whatever its name
    kind: str
    url: str
    bootstrap: str
    env: dict[str, str] = {}  # worker settings this broker needs

    def down(self) -> None:
        raise NotImplementedError

    def up(self) -> None:
        raise NotImplementedError


class TansuBroker(TestBroker):
    """Tansu (memory storage) on a loopback port: ``down`` loses everything on it."""

    kind = "tansu"
    env = {"OUTBOX_TOPIC_RECHECK_INTERVAL": TANSU_TOPIC_RECHECK}  # it forgets topics

    def __init__(self) -> None:
        self.proc = TansuProcess()
        self.url, self.bootstrap = self.proc.url, self.proc.bootstrap

    def start(self) -> TansuBroker:
        self.proc.start()
        return self

    def down(self) -> None:
        self.proc.kill()

    def up(self) -> None:
        self.proc.start()

    def close(self) -> None:
        self.proc.close()


class KafkaBroker(TestBroker):
    """The nodes of an Apache Kafka cluster: ``down`` is SIGKILL, ``up`` restarts them on
    their data."""

    kind = "kafka"

    def __init__(self, cluster: KafkaCluster) -> None:
        self.cluster = cluster
        self.url, self.bootstrap = cluster.url, cluster.bootstrap()

    def down(self) -> None:
        self.cluster.kill()

    def up(self) -> None:
        for i in range(len(self.cluster.members)):
            self.cluster.restart_node(i)
        self.cluster.wait_brokers(len(self.cluster.members))


@contextmanager
def tansu_broker() -> Iterator[TansuBroker]:
    broker = TansuBroker().start()
    try:
        yield broker
    finally:
        broker.close()


def unique_prefix() -> str:
    """A topic (and consumer group) prefix no other test uses."""
    return f"t{uuid.uuid4().hex[:10]}."


def worker_env(database_url: str, broker: TestBroker, prefix: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTBOX_")}
    env.update(
        {
            "OUTBOX_DATABASE_URL": database_url,
            "OUTBOX_BROKER_URL": broker.url,
            "OUTBOX_TOPIC_PREFIX": prefix,
            "OUTBOX_WEB_PORT": str(free_port()),
            "OUTBOX_SESSION_TIMEOUT": "6",
            "OUTBOX_HEARTBEAT_INTERVAL": "1",
            "OUTBOX_BACKOFF_JITTER": "0",
            "OUTBOX_RELAY_INTERVAL": "0.05",
            "PYTHONUNBUFFERED": "1",
            **broker.env,
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
