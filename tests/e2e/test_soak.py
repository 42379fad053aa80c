"""The short soak: about a minute of traffic on a three-broker Kafka cluster with every
fault kind at least once, then every committed event checked against its business effect.

It runs ``outbox-app soak`` as a process, as an operator would, and reads its ``--json``
result: the soak owns its registry, database server, brokers and workers. It asserts
invariants (nothing lost, nothing doubled, every fault happened, the backlog drained),
never the machine's speed: the events committed and the drain time are reported.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from outbox_app.devtools.kafka import java_available
from outbox_app.devtools.soak.config import faults_for
from outbox_app.devtools.soak.processes import PrivateMariaDB
from tests.support import ROOT, TEST_BROKER

BROKER = "kafka-cluster" if TEST_BROKER == "kafka" else "tansu"


@pytest.mark.timeout(900)
@pytest.mark.skipif(
    not PrivateMariaDB.available(),
    reason="needs mariadbd and mariadb-install-db for a private database server",
)
@pytest.mark.skipif(BROKER != "tansu" and not java_available(), reason="Kafka needs Java 17")
def test_short_soak_with_every_fault_loses_and_doubles_nothing(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    args = ["--seconds", "60", "--rate", "300", "--workers", "2", "--faults", "all"]
    args += ["--broker", BROKER, "--fault-interval", "2", "--seed", "20261122"]
    # How fast the backlog drains is the machine's business: only "it drains" is asserted.
    args += ["--drain-target", "600", "--json", str(out)]
    proc = subprocess.run(
        [sys.executable, "-m", "outbox_app", "soak", *args],
        cwd=str(ROOT),
        capture_output=True,
        text=True,
        timeout=850,
    )
    report = f"stdout:\n{proc.stdout}\nstderr (tail):\n{proc.stderr[-6000:]}"
    print(report)  # the SOAK line and the figures, for the record
    assert out.exists(), report
    result = json.loads(out.read_text())
    line = proc.stdout.strip().splitlines()[-1]
    assert line.startswith("SOAK events=") and " lost=0 doubled=0 out_of_order=0 " in line, report
    assert result["lost"] == 0 and result["doubled"] == 0, report
    assert result["out_of_order"] == 0, report  # every ordered stream, under every fault
    assert set(result["faults"]) == set(faults_for(BROKER)), report
    assert all(n >= 1 for n in result["faults"].values()), report
    assert result["events"] > 0, report
    assert result["consumed"] + result["dead"] == result["events"], report
    assert result["unexpected_dead"] == 0 and result["worker_exits"] == [], report
    assert result["drain_s"] is not None, report  # it drained
    assert result["violations"] == [], report
    assert proc.returncode == 0, report
