"""What a soak runs and breaks: its database server, its broker and its workers, set up
and torn down together, and the watch that restarts a worker that exited on its own."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import create_engine, text

from outbox_app.devtools.ports import free_port
from outbox_app.devtools.soak.config import HANDLER_MODULES, SERVICES, SESSION_TIMEOUT_S, SoakConfig
from outbox_app.devtools.soak.processes import (
    DatabaseServer,
    PrivateMariaDB,
    SharedMariaDB,
    SoakBroker,
    WorkerProc,
)


@dataclass
class Rig:
    cfg: SoakConfig
    tmp: Path
    say: Callable[[str], None]
    broker: SoakBroker
    server: DatabaseServer | None = None
    database: str = ""
    workers: list[WorkerProc] = field(default_factory=list)
    faulted: set[int] = field(default_factory=set)  # workers a fault is restarting right now
    lock: threading.Lock = field(default_factory=threading.Lock)
    exits: list[str] = field(default_factory=list)  # workers that exited on their own

    @contextmanager
    def database_server(self) -> Iterator[str]:
        """A database for the soak on its own server (or on ``--mysql-url``'s); its URL."""
        if self.cfg.mysql_url:
            server: DatabaseServer = SharedMariaDB(self.cfg.mysql_url)
            self.database = f"outbox_soak_{os.urandom(4).hex()}"
        else:
            if not PrivateMariaDB.available():
                raise RuntimeError(
                    "soak: mariadb-install-db and mariadbd are needed for a private database "
                    "server; or pass --mysql-url to use a running one"
                )
            server = PrivateMariaDB(self.tmp)
            self.database = "outbox_soak"
        self.server = server
        server.start()
        self._admin(f"CREATE DATABASE `{self.database}` CHARACTER SET utf8mb4")
        try:
            yield server.admin_url.rstrip("/") + "/" + self.database
        finally:
            if isinstance(server, SharedMariaDB) and not self.cfg.keep:
                with suppress(Exception):
                    self._admin(f"DROP DATABASE IF EXISTS `{self.database}`")
            server.close(keep_data=self.cfg.keep)

    def _admin(self, sql: str) -> None:
        assert self.server is not None
        admin = create_engine(self.server.admin_url, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                conn.execute(text(sql))
        finally:
            admin.dispose()

    def worker_env(self, url: str, k: int, app_id: str, faults_until: float) -> dict[str, str]:
        from outbox_app.devtools.soak.handlers import FAILURE_RATE_ENV, FAILURE_UNTIL_ENV

        env = dict(os.environ)
        env.update(
            OUTBOX_DATABASE_URL=url,
            OUTBOX_BROKER_URL=self.broker.url,
            OUTBOX_SERVICES=",".join(SERVICES),
            OUTBOX_APP_ID=app_id,
            OUTBOX_HANDLER_MODULES=HANDLER_MODULES,
            OUTBOX_WEB_PORT=str(free_port()),
            OUTBOX_WEB_HOST="127.0.0.1",
            OUTBOX_DATADIR=str(self.tmp / f"worker-{k}-data"),
            OUTBOX_LOG_LEVEL="info",
            # SIGSTOP longer than the session timeout forces a rebalance.
            OUTBOX_SESSION_TIMEOUT=f"{SESSION_TIMEOUT_S:g}",
            OUTBOX_HEARTBEAT_INTERVAL="1",
            # Messages the restarted in-memory broker lost come back this fast.
            OUTBOX_VISIBILITY_TIMEOUT="12",
            OUTBOX_MAINTENANCE_INTERVAL="2",
            OUTBOX_CLAIM_LEASE="10",
            # Retries wait at most 9 s, so the backlog drains soon after the last fault.
            OUTBOX_BACKOFF_CAP="3",
            PYTHONUNBUFFERED="1",
            **self.broker.env,
        )
        # Injected handler failures stop with the fault schedule, so the drain after the
        # last fault is measured without them.
        env[FAILURE_UNTIL_ENV] = f"{faults_until:.3f}"
        env[FAILURE_RATE_ENV] = (
            f"{self.cfg.handler_failure_rate:g}" if "handler" in self.cfg.kinds else "0"
        )
        return env

    def start_workers(self, url: str, app_id: str, faults_until: float) -> None:
        for k in range(self.cfg.workers):
            env = self.worker_env(url, k, app_id, faults_until)
            w = WorkerProc(k, env, self.tmp / f"worker-{k}.log")
            w.start()
            self.workers.append(w)

    def watch_workers(self, stop: threading.Event) -> None:
        """A worker must never exit because of a fault: note it, and start it again so the
        soak goes on. Runs until ``stop`` is set."""
        while not stop.wait(0.5):
            for w in self.workers:
                with self.lock:
                    if w.index in self.faulted or w.alive() or stop.is_set():
                        continue
                    code = w.proc.returncode if w.proc is not None else None
                    note = f"worker {w.index} exited with code {code}"
                    self.exits.append(note)
                    self.say(f"!! {note}; restarting it (log {w.log_path})")
                    w.start()

    def logs(self) -> str:
        return "\n".join(w.log_text() for w in self.workers)

    def close(self) -> None:
        for w in self.workers:
            w.close()
        self.broker.close()
