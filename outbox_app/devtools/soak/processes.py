"""The processes a soak runs and breaks: a MariaDB server, the broker, workers.

Each can be killed and started again on the same port, which is what the faults of
``outbox_app.devtools.soak`` do to them.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import IO

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from outbox_app.devtools.ports import free_port, wait_until
from outbox_app.devtools.tansu import TANSU_TOPIC_RECHECK, TansuProcess


def _stop_process(proc: subprocess.Popen[bytes], sig: int, timeout: float = 30.0) -> None:
    if proc.poll() is not None:
        return
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


# -- the database server ---------------------------------------------------------------


class DatabaseServer:
    """A MariaDB server the soak may restart and whose connections it may kill."""

    admin_url: str

    def start(self) -> None:
        raise NotImplementedError

    def restart(self, crash: bool) -> None:
        raise NotImplementedError

    def close(self, keep_data: bool = False) -> None:
        raise NotImplementedError

    def wait_ready(self, timeout: float = 60.0) -> None:
        engine = create_engine(self.admin_url, poolclass=NullPool)

        def answers() -> bool:
            try:
                with engine.connect() as conn:
                    conn.execute(text("SELECT 1"))
                return True
            except Exception:  # noqa: BLE001 - not up yet
                return False

        try:
            wait_until("the database server", answers, timeout, 0.2)
        finally:
            engine.dispose()

    def kill_connections(
        self, database: str, share: float, pick: Callable[[list[int], int], list[int]]
    ) -> int:
        """KILL a share (at least one) of the connections to ``database``."""
        engine = create_engine(self.admin_url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
        killed = 0
        try:
            with engine.connect() as conn:
                ids = [
                    int(r)
                    for (r,) in conn.execute(
                        text(
                            "SELECT id FROM information_schema.PROCESSLIST "
                            "WHERE db = :db AND id <> CONNECTION_ID()"
                        ),
                        {"db": database},
                    ).all()
                ]
                if not ids:
                    return 0
                wanted = max(1, int(len(ids) * share))
                for conn_id in pick(ids, wanted):
                    try:
                        conn.execute(text(f"KILL CONNECTION {int(conn_id)}"))
                        killed += 1
                    except Exception:  # noqa: BLE001 - it ended on its own meanwhile
                        pass
        finally:
            engine.dispose()
        return killed


class PrivateMariaDB(DatabaseServer):
    """A throw-away ``mariadbd`` on a free port with its own data directory, so that
    restarting it and killing its connections disturbs nobody else on the machine."""

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir / "mariadb"
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.admin_url = f"mysql+mysqldb://root@127.0.0.1:{self.port}/"

    @staticmethod
    def available() -> bool:
        return shutil.which("mariadb-install-db") is not None and _mariadbd() is not None

    def start(self) -> None:
        if not (self.dir / "data").exists():
            self.dir.mkdir(parents=True, exist_ok=True)
            cmd = [
                "mariadb-install-db",
                "--no-defaults",
                f"--datadir={self.dir / 'data'}",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ]
            if os.geteuid() == 0:
                cmd.append("--user=root")
            subprocess.run(cmd, check=True, capture_output=True, timeout=120)
        self._spawn()
        self.wait_ready()

    def _spawn(self) -> None:
        binary = _mariadbd()
        assert binary is not None
        cmd = [
            binary,
            "--no-defaults",
            f"--datadir={self.dir / 'data'}",
            f"--port={self.port}",
            "--bind-address=127.0.0.1",
            f"--socket={self.dir / 'mysqld.sock'}",
            f"--pid-file={self.dir / 'mysqld.pid'}",
            f"--log-error={self.dir / 'error.log'}",
            "--skip-name-resolve",
            "--max-connections=400",
            "--innodb-buffer-pool-size=256M",
            "--innodb-flush-log-at-trx-commit=1",  # the production default: commits are durable
        ]
        if os.geteuid() == 0:
            cmd.append("--user=root")
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )

    def restart(self, crash: bool) -> None:
        """A clean shutdown, or a crash (SIGKILL, InnoDB recovers on start)."""
        if self.proc is not None:
            _stop_process(self.proc, signal.SIGKILL if crash else signal.SIGTERM, 120)
        self._spawn()
        self.wait_ready()

    def close(self, keep_data: bool = False) -> None:
        if self.proc is not None:
            _stop_process(self.proc, signal.SIGTERM, 60)
        if not keep_data:
            shutil.rmtree(self.dir, ignore_errors=True)


class SharedMariaDB(DatabaseServer):
    """The machine's MariaDB (``--mysql-url``). Restarting it disturbs everyone using it,
    so the soak does it at most ``--db-restarts`` times."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        url = make_url(admin_url)
        self.port = url.port or 3306

    def start(self) -> None:
        self.wait_ready(10)

    def restart(self, crash: bool) -> None:
        subprocess.run(["mariadb-admin", "-uroot", "shutdown"], check=False, timeout=120)
        subprocess.run(
            [
                "start-stop-daemon",
                "--start",
                "--oknodo",
                "--background",
                "--exec",
                _mariadbd() or "/usr/sbin/mariadbd",
                "--",
                "--user=mysql",
            ],
            check=False,
            timeout=60,
        )
        self.wait_ready()

    def close(self, keep_data: bool = False) -> None:
        pass  # not ours to stop


def _mariadbd() -> str | None:
    found = shutil.which("mariadbd")
    if found:
        return found
    return "/usr/sbin/mariadbd" if os.access("/usr/sbin/mariadbd", os.X_OK) else None


# -- the broker --------------------------------------------------------------------------


class SoakBroker:
    """The broker a soak runs and breaks."""

    url: str
    bootstrap: str
    env: dict[str, str] = {}  # what workers need to know about it

    def start(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError


class TansuSoakBroker(SoakBroker):
    """Tansu, in memory: its fault is a restart that loses topics, offsets and groups."""

    env = {"OUTBOX_TOPIC_RECHECK_INTERVAL": TANSU_TOPIC_RECHECK}

    def __init__(self, workdir: Path) -> None:
        self.proc = TansuProcess(log_path=workdir / "broker.log")
        self.url, self.bootstrap = self.proc.url, self.proc.bootstrap

    def start(self) -> None:
        self.proc.start()

    def restart_empty(self, down_s: float) -> None:
        self.proc.kill()
        time.sleep(down_s)
        self.proc.start()

    def close(self) -> None:
        self.proc.close()

    def describe(self) -> str:
        return f"Tansu {self.bootstrap} (in memory)"


class KafkaSoakBroker(SoakBroker):
    """Apache Kafka nodes keeping their data: a node is SIGKILLed and started again on it
    (its partitions' leadership moves meanwhile), or all are restarted one by one."""

    def __init__(self, workdir: Path, nodes: int) -> None:
        from outbox_app.devtools.kafka import KafkaCluster

        self.cluster = KafkaCluster(workdir / "kafka", nodes=nodes)
        self.url, self.bootstrap = self.cluster.url, self.cluster.bootstrap()

    def start(self) -> None:
        self.cluster.start()

    def kill_node(self, index: int, down_s: float) -> None:
        self.cluster.kill_node(index)
        time.sleep(down_s)
        self.cluster.restart_node(index)

    def bounce(self) -> None:
        """A rolling restart: each node shut down cleanly and started again, the next one
        once the cluster sees all its brokers again."""
        for i, node in enumerate(self.cluster.members):
            node.stop()
            self.cluster.restart_node(i)
            self.cluster.wait_brokers(len(self.cluster.members))

    def close(self) -> None:
        self.cluster.close()

    def describe(self) -> str:
        n = len(self.cluster.members)
        return f"Apache Kafka, {n} node(s): {self.bootstrap}"


# -- workers -----------------------------------------------------------------------------


class WorkerProc:
    """One ``outbox-app worker`` process (restartable) with its log appended to a file."""

    def __init__(self, index: int, env: dict[str, str], log_path: Path) -> None:
        self.index = index
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        if self._log is None:
            self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in close()
        self._log.write(f"\n=== soak: start #{self.starts + 1} ===\n".encode())
        self._log.flush()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "outbox_app", "worker"],
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.starts += 1

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            assert self.proc is not None
            with suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)

    def kill(self) -> None:
        if self.proc is not None:
            _stop_process(self.proc, signal.SIGKILL)

    def stop(self) -> None:
        if self.proc is not None:
            self.signal(signal.SIGCONT)  # a stopped process cannot handle SIGTERM
            _stop_process(self.proc, signal.SIGTERM, 30)

    def close(self) -> None:
        self.stop()
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""
