"""Dead letters grouped by failure signature, and requeue of one group, on a real database
(SQLite and MariaDB): through ``Operations`` (what the web view runs) and ``outbox-app dead
groups`` / ``dead requeue --signature``. Rows are put dead through the store."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import Engine, update

from outbox_app import Status, default_registry
from outbox_app.clock import db_time
from outbox_app.database import make_engine
from outbox_app.ops import operations
from outbox_app.ops.cli import main
from outbox_app.ops.operations import Operations
from outbox_app.schema import create_schema
from outbox_app.store import OutboxStore

MISSING = "LookupError: task '…' does not exist (yet)"
WEBHOOK = "remote work failed: RuntimeError: webhook answered N: nope"


@dataclass
class Run:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@dataclass
class Db:
    engine: Engine
    ops: Operations

    def store(self, service: str = "task") -> OutboxStore:
        return OutboxStore(self.engine, default_registry.route(service))

    def dead(self, event_type: str, error: str, died_s_ago: float, secret: str = "") -> int:
        """A dead row that died ``died_s_ago`` seconds ago (by the database's clock)."""
        store = self.store(default_registry.owner(event_type))
        payload = {"task_id": "t", "user_id": 1, "title": secret or "x"}
        with self.engine.begin() as conn:
            row_id = store.add(
                conn, event_type=event_type, payload_json=json.dumps(payload), key="k", max_retry=3
            )
            store.mark_dead({row_id: error}, conn)
            t = store.table
            conn.execute(update(t).where(t.c.id == row_id).values(updated_at=db_time(-died_s_ago)))
        return row_id

    def status(self, row_id: int, service: str = "task") -> Status | None:
        row = self.store(service).get(row_id)
        return None if row is None else row.status


@pytest.fixture
def db(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Db]:
    default_registry.load_modules(["handlers"])
    engine = make_engine(db_url)
    create_schema(engine, default_registry.routes(), default_registry.metadata)
    for name in list(os.environ):
        if name.startswith("OUTBOX_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("OUTBOX_DATABASE_URL", db_url)
    try:
        yield Db(engine, Operations.for_engine(engine, default_registry))
    finally:
        engine.dispose()


@pytest.fixture
def cli(db: Db, capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    def run(*args: str) -> Run:
        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse's usage errors
            code = int(exc.code or 0)
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    return run


def incident(db: Db) -> dict[str, list[int]]:
    """Three tasks that never existed, two webhook failures, one of another service."""
    return {
        "missing": [
            db.dead("task.completed", f"LookupError: task 't{n}' does not exist (yet)", 60 - n)
            for n in range(3)
        ]
        + [db.dead("task.created", "LookupError: task 'x-77' does not exist (yet)", 100)],
        "webhook": [
            db.dead("task.created", f"{WEBHOOK.replace('N', str(code))}", 30, secret="s3cret")
            for code in (502, 503)
        ],
        "other_service": [
            db.dead("memory.upsert", "LookupError: task 't1' does not exist (yet)", 5)
        ],
    }


def test_groups_by_signature_with_counts_types_times_and_a_sample(db: Db) -> None:
    rows = incident(db)
    doc = db.ops.dead_groups("task")
    assert doc["service"] == "task"
    assert (doc["scanned"], doc["scan_cut"], doc["scan_limit"]) == (6, False, 10_000)
    assert doc["group_count"] == 2
    first, second = doc["groups"]
    assert (first["signature"], first["count"]) == (MISSING, 4)
    assert first["event_types"] == ["task.completed", "task.created"]
    assert first["sample"]["id"] == rows["missing"][2]  # the newest of the group
    assert first["sample"]["last_error"] == "LookupError: task 't2' does not exist (yet)"
    assert first["first_seen"] < first["last_seen"]  # ISO strings of one format sort as times
    assert (second["signature"], second["count"]) == (WEBHOOK, 2)
    assert "s3cret" not in json.dumps(doc) and "payload" not in json.dumps(doc)


def test_requeue_of_one_signature_moves_only_its_rows(db: Db) -> None:
    rows = incident(db)
    doc = db.ops.requeue_signature_document("task", MISSING)
    assert doc["requeued"] == sorted(rows["missing"]) and doc["count"] == 4
    assert doc["signature"] == MISSING and doc["scanned"] == 6 and doc["scan_cut"] is False
    assert all(db.status(i) == Status.PENDING for i in rows["missing"])
    assert all(db.status(i) == Status.DEAD for i in rows["webhook"])
    assert db.status(rows["other_service"][0], "memory") == Status.DEAD  # another service
    row = db.store().get(rows["missing"][0])
    assert row is not None and row.retry_count == 0
    again = db.ops.requeue_signature_document("task", MISSING)
    assert again["requeued"] == [] and again["count"] == 0
    assert [g["signature"] for g in db.ops.dead_groups("task")["groups"]] == [WEBHOOK]


def test_the_scan_reads_only_the_newest_dead_rows_and_says_so(
    db: Db, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = incident(db)
    monkeypatch.setattr(operations, "DEAD_SCAN", 3)
    doc = db.ops.dead_groups("task")
    assert (doc["scanned"], doc["scan_cut"], doc["scan_limit"]) == (3, True, 3)
    # The newest three: the webhook pair (30 s ago) and t2 (58 s ago).
    assert {g["signature"]: g["count"] for g in doc["groups"]} == {WEBHOOK: 2, MISSING: 1}
    done = db.ops.requeue_signature_document("task", MISSING)
    assert done["requeued"] == [rows["missing"][2]] and done["scan_cut"] is True
    assert [db.status(i) for i in rows["missing"][:2]] == [Status.DEAD, Status.DEAD]


def test_cli_groups_table_json_and_requeue_by_signature(db: Db, cli) -> None:  # type: ignore[no-untyped-def]
    rows = incident(db)
    table = cli("dead", "groups", "--service", "task")
    assert table.code == 0, table.err
    lines = table.out.splitlines()
    assert lines[0].split()[:2] == ["dead", "event"]
    assert lines[2].split()[0] == "4" and MISSING in lines[2]
    assert lines[3].split()[0] == "2" and WEBHOOK in lines[3]
    assert "scanned all 6 dead row(s)" in table.out
    assert cli("dead", "groups", "--service", "task", "--json").json() == db.ops.dead_groups("task")
    assert cli("dead", "groups", "--service", "agent").out.startswith("no dead letters")

    run = cli("dead", "requeue", "--service", "task", "--signature", WEBHOOK)
    assert run.code == 0, run.err
    assert (
        f"requeued 2 dead row(s) of service task: {', '.join(map(str, rows['webhook']))}" in run.out
    )
    assert all(db.status(i) == Status.PENDING for i in rows["webhook"])
    none = cli("dead", "requeue", "--service", "task", "--signature", "no such failure", "--json")
    assert none.code == 0 and none.json()["count"] == 0


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["dead", "groups"], "the following arguments are required: --service"),
        (["dead", "groups", "--service", "nope"], "unknown service 'nope'"),
        (
            ["dead", "groups", "--service", "task", "--limit", "0"],
            "argument --limit: must be between 1",
        ),
        (
            ["dead", "requeue", "--service", "task", "--signature", " "],
            "signature must be a non-empty string",
        ),
        (
            ["dead", "requeue", "--service", "task", "--signature", "x" * 501],
            "at most 500 characters",
        ),
        (
            ["dead", "requeue", "--service", "task", "--signature", "x", "--all"],
            "not allowed with argument",
        ),
    ],
)
def test_bad_input_exits_2_naming_the_problem(db: Db, cli, args: list[str], complaint: str) -> None:  # type: ignore[no-untyped-def]
    run = cli(*args)
    assert run.code == 2, (run.out, run.err)
    assert complaint in run.err and "Traceback" not in run.err
