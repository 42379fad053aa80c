"""The README's example handler module runs as written: taken from the README, imported
in a process of its own (it registers on the default registry), and run through the
testing harness on SQLite."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.support import ROOT

SCRIPT = """
import sys, types
from sqlalchemy import select
from outbox_app import load_handlers
from outbox_app.database import make_engine
from outbox_app.testing import HandlerHarness

load_handlers()  # handlers/: notification.requested, which the example publishes
module = types.ModuleType("billing")
exec(compile(open(sys.argv[1]).read(), "README.md#billing", "exec"), module.__dict__)
engine = make_engine("sqlite:///" + sys.argv[2], pool_size=2)
with HandlerHarness(engine) as h:
    ok = h.deliver("invoice.requested", {"user_id": 7, "customer": "acme", "amount_cents": 1250})
    assert ok.consumed, ok
    rows = h.connection.execute(select(module.invoices)).all()
    assert [(r.outbox_id, r.customer) for r in rows] == [(ok.outbox_id, "acme")], rows
    (note,) = ok.published
    assert (note.event_type, note.service, note.key) == ("notification.requested", "notification", "7")
    sent = h.deliver_published(note)  # recorded, then handed to its webhook after the commit
    assert sent.ran and sent.after_commit is not None, sent
    bad = h.deliver("invoice.requested", {"user_id": 7, "customer": "acme", "amount_cents": 0})
    assert bad.dead and "amount_cents" in (bad.error or ""), bad
print("README example ok")
"""


def readme_module() -> str:
    text = (ROOT / "README.md").read_text()
    found = re.search(r"```python\n(# handlers/billing\.py\n.*?)```", text, re.S)
    assert found, "the README's handlers/billing.py example is gone"
    return found.group(1)


def test_the_readmes_example_handler_module_runs_as_written(tmp_path: Path) -> None:
    module = tmp_path / "billing.py"
    module.write_text(readme_module())
    run = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(module), str(tmp_path / "example.db")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0 and "README example ok" in run.stdout, run.stderr[-3000:]
