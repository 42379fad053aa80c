"""``outbox-app bench`` runs end to end and prints one well-formed result line (the
figures themselves are for the benchmark, not for a timed test)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from tests.support import ROOT, TEST_BROKER

LINE = re.compile(
    r"^BENCH n=2000 workers=1 partitions=4 broker=(kafka|tansu) write_tps=\d+ drain_eps=\d+ "
    r"drain_vs_limit=\d+\.\d\d live_rate=[\d.]+ p50_ms=[\d.]+ p95_ms=[\d.]+ p99_ms=[\d.]+ "
    r"max_ms=[\d.]+ start_s=[\d.]+ lost=0 doubled=0 kafka_limit_eps=\d+ db_limit_eps=\d+ "
    r"faust_limit_eps=\d+ drain_vs_faust=\d+\.\d\d cpu_us_per_event=\d+ "
    r"db_round_trips_per_event=\d+\.\d\d load_cpu_share=\d+\.\d\d "
    r"ordered_drain_eps=\d+ ordered_10_keys_drain_eps=\d+ ordered_p50_ms=[\d.]+ "
    r"ordered_p99_ms=[\d.]+( [a-z0-9_]+=[\w.,:-]+)*$"
)


def test_bench_prints_one_well_formed_line(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "outbox_app",
            "bench",
            "--n",
            "2000",
            "--live-seconds",
            "3",
            "--write-tx",
            "200",
            "--json",
            str(out),
            "--broker",
            TEST_BROKER,
            "--split-roles",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    lines = [line for line in run.stdout.splitlines() if line.startswith("BENCH")]
    assert len(lines) == 1 and LINE.match(lines[0]), run.stdout
    figures = json.loads(out.read_text())
    assert figures["lost"] == 0 and figures["doubled"] == 0 and figures["drain_eps"] > 0
    # Where the machine's CPU went during the drain: the local MariaDB server's share per
    # event, and the idle share of the whole machine (a fraction, not a speed).
    assert figures["extra"]["db_cpu_us_per_event"] > 0
    assert 0.0 <= figures["extra"]["drain_idle_share"] <= 1.0
    # and during the live load: the workers' CPU per event and the machine's idle share
    assert figures["extra"]["live_cpu_us_per_event"] > 0
    assert 0.0 <= figures["extra"]["live_idle_share"] <= 1.0
    # and the drain again with the relay and the consumer in two processes (its rows are
    # among those checked for lost and doubled effects above)
    assert figures["extra"]["drain_eps_split"] > 0
    assert figures["extra"]["cpu_us_per_event_split"] > 0
