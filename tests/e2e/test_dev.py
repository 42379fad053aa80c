"""``outbox-app dev`` on the embedded default: SQLite and a broker it starts itself."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.orm import Session

from outbox_app import default_registry, publish
from outbox_app.database import make_engine
from tests.support import ROOT, free_port, wait_for


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is gone for our purposes: check its state
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


def stats(env: dict[str, str], cwd: Path) -> dict:  # type: ignore[type-arg]
    out = subprocess.run(
        [sys.executable, "-m", "outbox_app", "stats", "--json"],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(out.stdout)


def test_dev_runs_everything_and_stops_the_broker_on_sigterm(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTBOX_")}
    env["PYTHONPATH"] = str(ROOT)
    log_path = tmp_path / "dev.log"
    started = time.monotonic()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "outbox_app",
                "dev",
                "--demo-rate",
                "20",
                "--web-port",
                str(free_port()),
            ],
            env=env,
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        found = wait_for(
            lambda: re.search(r"broker pid (\d+) on", log_path.read_text()), 30, "the broker"
        )
        broker_pid = int(found.group(1))
        db = tmp_path / "outbox-dev.sqlite3"
        wait_for(db.exists, 30, "the SQLite database")
        stats_env = {**env, "OUTBOX_DATABASE_URL": f"sqlite:///{db}"}

        # publish from a business transaction of our own, next to the demo traffic
        default_registry.load_modules(["handlers"])
        engine = make_engine(f"sqlite:///{db}")
        wait_for(lambda: "consumed" in json.dumps(stats(stats_env, tmp_path)), 30, "the schema")
        with Session(engine) as session, session.begin():
            publish(
                session, "memory.upsert", {"user_id": 999, "key": "tz", "value": "UTC"}, key="999"
            )

        def consumed() -> int:
            doc = stats(stats_env, tmp_path)
            return sum(s["consumed"] for s in doc["services"].values())

        wait_for(lambda: consumed() > 0, 60, "a first consumed event", interval=0.5)
        first_consumed_s = time.monotonic() - started
        wait_for(lambda: consumed() >= 60, 60, "demo traffic to flow", interval=0.5)
        with engine.connect() as conn:
            value = conn.execute(text("SELECT value FROM memories WHERE user_id = 999")).scalar()
        engine.dispose()
        assert value == "UTC"
        print(f"dev: first consumed event {first_consumed_s:.1f}s after the command")
        assert pid_alive(broker_pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
    text_log = log_path.read_text()
    assert code == 0, text_log[-3000:]
    assert "web view: http://127.0.0.1:" in text_log
    assert "broker stopped" in text_log
    wait_for(lambda: not pid_alive(broker_pid), 10, "the broker process to be gone")


def test_ctrl_c_stops_every_child_even_when_stdout_is_gone(tmp_path: Path) -> None:
    """``make run | tee log``, then Ctrl-C: tee dies with the terminal's SIGINT, so every
    later line the dev run prints meets a closed pipe. The broker and the worker must
    still be stopped."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTBOX_")}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.Popen(
        [sys.executable, "-m", "outbox_app", "dev", "--web-port", str(free_port())],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        broker_pid = worker_hint = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (broker_pid is None or worker_hint is None):
            line = proc.stdout.readline().decode()
            lines.append(line)
            if m := re.search(r"broker pid (\d+) on", line):
                broker_pid = int(m.group(1))
            if "OUTBOX_DATABASE_URL=sqlite:///" in line:
                worker_hint = line  # how to point the CLI at the dev database
        assert broker_pid is not None and worker_hint is not None, lines
        assert str(tmp_path) in worker_hint  # an absolute path: usable from anywhere
    finally:
        proc.stdout.close()  # the reader is gone, as tee after Ctrl-C
        proc.send_signal(signal.SIGINT)
        code = proc.wait(60)
    assert code == 0
    wait_for(lambda: not pid_alive(broker_pid), 15, "the broker process to be gone")
