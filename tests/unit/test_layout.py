"""What a worker process loads: the library and the worker, never the dev tools."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.support import ROOT

PROBE = """
import json, sys
import outbox_app.app
from outbox_app.settings import Settings
from outbox_app.worker.app import build_app
app = build_app(Settings(database_url="sqlite:///{db}", datadir="{data}", web_enabled=True))
app.runtime.close()
print(json.dumps(sorted(m for m in sys.modules if m.startswith("outbox_app"))))
"""


def test_building_the_worker_app_imports_no_dev_tool(tmp_path) -> None:  # type: ignore[no-untyped-def]
    code = PROBE.format(db=tmp_path / "x.sqlite3", data=tmp_path / "data")
    run = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr[-2000:]
    loaded = json.loads(run.stdout.strip().splitlines()[-1])
    assert "outbox_app.worker.app" in loaded and "outbox_app.ops.web.views" in loaded
    assert [m for m in loaded if m.startswith("outbox_app.devtools")] == []
