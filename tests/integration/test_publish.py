"""``publish()`` from a business service's point of view: one call makes the event types
known, ``OUTBOX_MAX_RETRY`` sets the attempts, Core connections work as sessions do."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from outbox_app import ConfigurationError, Registry, publish
from outbox_app.store import OutboxStore
from tests.support import ROOT

PUBLISHER = """
import sys
from sqlalchemy.orm import Session
import outbox_app
from outbox_app.database import make_engine
from outbox_app.schema import create_schema

import handlers  # what a service naturally does first: it registers nothing by itself
registry = outbox_app.load_handlers()  # the one call: OUTBOX_HANDLER_MODULES, default handlers
engine = make_engine(sys.argv[1])
create_schema(engine, registry.routes(), registry.metadata)
with Session(engine) as session, session.begin():
    print(outbox_app.publish(session, "memory.upsert", {"user_id": 1, "key": "k", "value": "v"}))
"""


def test_one_call_makes_a_publishing_service_know_the_event_types(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-c", PUBLISHER, f"sqlite:///{tmp_path / 'svc.sqlite3'}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "1"


def test_publish_takes_its_attempts_from_outbox_max_retry(
    schema: Engine, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = OutboxStore(schema, registry.route("agent"))

    def published(**kw: object) -> int:
        with Session(schema) as session, session.begin():
            row_id = publish(session, "chat.persist", {}, registry=registry, **kw)  # type: ignore[arg-type]
        row = store.get(row_id)
        assert row is not None
        return row.max_retry

    assert published() == 20
    monkeypatch.setenv("OUTBOX_MAX_RETRY", "7")
    assert published() == 7
    assert published(max_retry=3) == 3  # the call's own wins
    monkeypatch.setenv("OUTBOX_MAX_RETRY", "many")
    with pytest.raises(ConfigurationError, match="OUTBOX_MAX_RETRY must be an integer"):
        published()


def test_a_core_connection_publishes_like_a_session(schema: Engine, registry: Registry) -> None:
    store = OutboxStore(schema, registry.route("agent"))
    with schema.connect() as conn, conn.begin() as tx:
        row_id = publish(conn, "chat.persist", {"via": "core"}, key="k", registry=registry)
        tx.rollback()  # and it follows the caller's transaction
    assert store.get(row_id) is None
    with schema.begin() as conn:
        row_id = publish(conn, "chat.persist", {"via": "core"}, key="k", registry=registry)
    row = store.get(row_id)
    assert row is not None and row.payload == '{"via":"core"}'
