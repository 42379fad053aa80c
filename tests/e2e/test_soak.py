"""The short soak: about a minute of traffic with every fault kind at least once, then
every committed event checked against its business effect.

It runs ``outbox-app soak`` as a process, as an operator would, and reads its
``--json`` result: the soak owns its registry, database server, broker and workers.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from outbox_app.devtools.soak import FAULT_KINDS
from outbox_app.devtools.soak.processes import PrivateMariaDB
from tests.support import ROOT


@pytest.mark.timeout(480)
@pytest.mark.skipif(
    not PrivateMariaDB.available(),
    reason="needs mariadbd and mariadb-install-db for a private database server",
)
def test_short_soak_with_every_fault_loses_and_doubles_nothing(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    args = ["--seconds", "60", "--rate", "300", "--workers", "2", "--faults", "all"]
    args += ["--fault-interval", "2", "--seed", "20261122", "--json", str(out)]
    proc = subprocess.run(
        [sys.executable, "-m", "outbox_app", "soak", *args],
        cwd=str(ROOT),
        capture_output=True,
        text=True,
        timeout=450,
    )
    report = f"stdout:\n{proc.stdout}\nstderr (tail):\n{proc.stderr[-6000:]}"
    assert out.exists(), report
    result = json.loads(out.read_text())
    line = proc.stdout.strip().splitlines()[-1]
    assert line.startswith("SOAK events=") and " lost=0 doubled=0 " in line, report
    assert result["lost"] == 0 and result["doubled"] == 0, report
    assert set(result["faults"]) == set(FAULT_KINDS), report
    assert all(n >= 1 for n in result["faults"].values()), report
    assert result["events"] > 10_000, report  # about 300 events/s were really committed
    assert result["consumed"] + result["dead"] == result["events"], report
    assert result["unexpected_dead"] == 0 and result["worker_exits"] == [], report
    # After the last fault, the backlog drains back to zero within 30 s.
    assert result["drain_s"] is not None and result["drain_s"] <= 30.0, report
    assert result["violations"] == [], report
    assert proc.returncode == 0, report
