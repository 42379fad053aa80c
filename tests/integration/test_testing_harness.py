"""``outbox_app.testing`` itself: what the harness reports, that it leaves nothing behind,
ordered services, and the pytest plugin as a user's project loads it."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import Column, Engine, MetaData, String, Table, func, select

from outbox_app import HandlerContext, OutboxError, Registry
from outbox_app.schema import Id, outbox_table
from outbox_app.testing import HandlerHarness


@dataclass
class Note:
    text: str


NOTES_MD = MetaData()
notes = Table(
    "harness_notes", NOTES_MD, Column("id", Id, primary_key=True), Column("text", String(64))
)


def make_registry() -> Registry:
    reg = Registry()
    reg.add_metadata(NOTES_MD)
    reg.add_service("steps", ordering="key")

    @reg.handler("note.add", service="notes", payload=Note)
    def add(ctx: HandlerContext) -> None:
        if ctx.payload.text == "boom":
            raise RuntimeError("boom")
        ctx.insert(notes, text=ctx.payload.text)
        if ctx.payload.text == "echo":
            ctx.publish("step.do", {"text": "from echo"}, key="k")

    @reg.handler("step.do", service="steps", payload=Note)
    def step(ctx: HandlerContext) -> None:
        if ctx.payload.text == "boom":
            raise RuntimeError("step failed")

    return reg


def notes_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(notes)).scalar_one())


def test_everything_is_rolled_back_on_close(engine: Engine) -> None:
    reg = make_registry()
    with HandlerHarness(engine, reg) as h:
        out = h.deliver("note.add", {"text": "echo"})
        assert out.consumed and out.ran
        assert [(p.service, p.event_type, p.key) for p in out.published] == [
            ("steps", "step.do", "k")
        ]
        assert h.deliver_published(out.published[0]).consumed
    assert notes_count(engine) == 0
    with engine.connect() as conn:  # and no outbox rows either
        for route in reg.routes():
            t = outbox_table(route)
            assert conn.execute(select(func.count()).select_from(t)).scalar_one() == 0


def test_failures_retries_and_misuse_are_reported(engine: Engine) -> None:
    reg = make_registry()
    with HandlerHarness(engine, reg) as h:
        out = h.deliver("note.add", {"text": "boom"}, max_retry=2)
        assert out.failed and out.ran and out.error == "RuntimeError: boom"
        dead = h.retry(out)
        assert dead.dead and dead.attempts == 2
        with pytest.raises(OutboxError, match=r"outbox id \d+ of service notes did not fail"):
            h.retry(dead)
        assert h.redeliver(dead).duplicate
        with pytest.raises(OutboxError, match="no outbox row 999 in service notes"):
            h.deliver_row(999, "notes")


def test_an_ordered_key_parks_behind_its_failed_head(engine: Engine) -> None:
    reg = make_registry()
    with HandlerHarness(engine, reg) as h:
        head = h.deliver("step.do", {"text": "boom"}, key="k")
        later = h.deliver("step.do", {"text": "fine"}, key="k")
        other = h.deliver("step.do", {"text": "fine"}, key="other")
        assert head.failed and later.parked and not later.ran and other.consumed
        assert h.row(head.outbox_id, "steps").status.value == "pending"


SHOP_HANDLERS = """
from dataclasses import dataclass
from sqlalchemy import Column, MetaData, String, Table
from outbox_app import HandlerContext, default_registry, handler
from outbox_app.schema import Id, outbox_table

metadata = default_registry.add_metadata(MetaData())
orders = Table("orders", metadata, Column("id", Id, primary_key=True), Column("sku", String(32)))

@dataclass
class OrderPlaced:
    sku: str

@handler("order.placed", service="shop", payload=OrderPlaced)
def place(ctx: HandlerContext) -> None:
    ctx.insert(orders, sku=ctx.payload.sku)
"""

SHOP_TEST = """
from sqlalchemy import func, select
from shop_handlers import orders

def test_an_order_is_stored(outbox_harness):
    out = outbox_harness.deliver("order.placed", {"sku": "A-1"})
    assert out.consumed
    n = outbox_harness.connection.execute(select(func.count()).select_from(orders)).scalar_one()
    assert n == 1
"""


def test_the_plugin_gives_a_users_project_a_harness(tmp_path: Path) -> None:
    """A project with its own handler module and a test using ``outbox_harness``, run by a
    pytest process of its own that finds the plugin through the package's entry point."""
    (tmp_path / "shop_handlers.py").write_text(SHOP_HANDLERS)
    (tmp_path / "test_shop.py").write_text(SHOP_TEST)
    env = {**os.environ, "OUTBOX_HANDLER_MODULES": "shop_handlers", "PYTHONPATH": str(tmp_path)}
    env.pop("OUTBOX_TEST_DATABASE_URL", None)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout
