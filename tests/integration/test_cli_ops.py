"""``outbox-app stats|dead|requeue|purge`` against a real MariaDB database (no broker:
the rows are put in the states the commands act on through the store)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text, update
from sqlalchemy.orm import Session

from outbox_app import Status, default_registry, publish
from outbox_app.clock import db_time
from outbox_app.database import make_engine
from outbox_app.ops.cli import main
from outbox_app.schema import create_schema
from outbox_app.store import OutboxStore
from tests.support import ROOT, free_port


@dataclass
class Run:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@dataclass
class Db:
    url: str
    engine: Engine

    def store(self, service: str) -> OutboxStore:
        return OutboxStore(self.engine, default_registry.route(service))

    def chat(self, n: int, role: str = "user") -> int:
        payload = {"user_id": 1, "conversation_id": "c-cli", "role": role, "message": f"m{n}"}
        with Session(self.engine) as session, session.begin():
            return publish(session, "chat_history.persist", payload, key=f"k{n}")

    def dead(self, n: int, reason: str = "boom") -> int:
        row_id = self.chat(n)
        self.store("agent").mark_dead({row_id: f"{reason} #{n}"})
        return row_id

    def consumed(self, n: int, days_ago: float = 0) -> int:
        row_id = self.chat(n)
        store = self.store("agent")
        store.mark_consumed([row_id])
        if days_ago:
            t = store.table
            with self.engine.begin() as conn:
                conn.execute(
                    update(t).where(t.c.id == row_id).values(consumed_at=db_time(-days_ago * 86400))
                )
        return row_id

    def status(self, row_id: int, service: str = "agent") -> Status | None:
        row = self.store(service).get(row_id)
        return None if row is None else row.status


@pytest.fixture
def db(mariadb_db: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Db]:
    default_registry.load_modules(["handlers"])
    engine = make_engine(mariadb_db)
    create_schema(engine, default_registry.routes(), default_registry.metadata)
    for name in list(os.environ):
        if name.startswith("OUTBOX_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("OUTBOX_DATABASE_URL", mariadb_db)
    try:
        yield Db(mariadb_db, engine)
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


# -- stats -----------------------------------------------------------------------------------
def test_stats_table_and_json(db: Db, cli) -> None:  # type: ignore[no-untyped-def]
    db.chat(1)
    db.dead(2)
    db.consumed(3)
    table = cli("stats")
    assert table.code == 0
    lines = table.out.splitlines()
    assert lines[0].split() == [
        "service",
        "pending",
        "published",
        "consumed",
        "dead",
        "oldest",
        "pending",
    ]
    agent = next(line.split() for line in lines if line.startswith("agent"))
    assert agent[1:5] == ["1", "0", "1", "1"] and agent[5].endswith("s")

    doc = cli("stats", "--json").json()
    assert doc["services"]["agent"] == {
        "pending": 1,
        "published": 0,
        "consumed": 1,
        "dead": 1,
        "oldest_pending_age_s": doc["services"]["agent"]["oldest_pending_age_s"],
    }
    assert doc["services"]["agent"]["oldest_pending_age_s"] >= 0
    assert set(doc["services"]) == set(default_registry.services)


# -- dead list / show ------------------------------------------------------------------------
def test_dead_list_is_a_table_newest_first_with_the_last_error(db: Db, cli) -> None:  # type: ignore[no-untyped-def]
    ids = [db.dead(n, reason="handler said no\nwith a second line") for n in range(3)]
    db.chat(9)  # pending: not listed
    run = cli("dead", "list", "--service", "agent")
    assert run.code == 0, run.err
    lines = run.out.splitlines()
    assert lines[0].split()[:2] == ["id", "event"]
    listed = [int(line.split()[0]) for line in lines[2:]]
    assert listed == sorted(ids, reverse=True)
    assert "handler said no with a second line #0" in run.out  # one line per row


def test_dead_list_pages_and_filters_in_json(db: Db, cli) -> None:  # type: ignore[no-untyped-def]
    ids = sorted((db.dead(n) for n in range(5)), reverse=True)
    first = cli("dead", "list", "--service", "agent", "--limit", "2", "--json").json()
    assert [i["id"] for i in first["items"]] == ids[:2] and first["next_offset"] == 2
    last = cli(
        "dead", "list", "--service", "agent", "--limit", "2", "--offset", "4", "--json"
    ).json()
    assert [i["id"] for i in last["items"]] == ids[4:] and last["next_offset"] is None
    item = first["items"][0]
    assert item["payload"]["conversation_id"] == "c-cli" and item["last_error"] == "boom #4"
    human = cli("dead", "list", "--service", "agent", "--limit", "2")
    assert "more: --offset 2" in human.out
    typed = cli(
        "dead", "list", "--service", "agent", "--event-type", "chat_history.persist", "--json"
    ).json()
    assert len(typed["items"]) == 5
    assert cli("dead", "list", "--service", "memory").out.startswith("no dead letters")


def test_dead_show_prints_the_row_and_its_payload(db: Db, cli) -> None:  # type: ignore[no-untyped-def]
    row_id = db.dead(1, reason="nope")
    human = cli("dead", "show", "--service", "agent", str(row_id))
    assert human.code == 0
    assert "id" in human.out and "last_error" in human.out and "nope #1" in human.out
    assert '"conversation_id": "c-cli"' in human.out
    doc = cli("dead", "show", "--service", "agent", str(row_id), "--json").json()
    assert doc["id"] == row_id and doc["status"] == "dead"

    missing = cli("dead", "show", "--service", "agent", "424242")
    assert missing.code == 1
    assert missing.err.strip() == "outbox-app: error: no outbox row 424242 in service 'agent'"


# -- requeue ---------------------------------------------------------------------------------
def test_requeue_by_id_all_and_event_type(db: Db, cli) -> None:  # type: ignore[no-untyped-def]
    a, b, c, d = (db.dead(n) for n in range(4))
    live = db.chat(5)
    one = cli("dead", "requeue", "--service", "agent", "--id", str(a), "--id", str(live))
    assert one.code == 0
    assert f"requeued 1 dead row(s) of service agent: {a}" in one.out
    assert f"not dead, left alone: {live} (pending)" in one.out
    assert db.status(a) == Status.PENDING and db.status(b) == Status.DEAD

    typed = cli(
        "dead", "requeue", "--service", "agent", "--event-type", "chat_history.persist", "--json"
    ).json()
    assert typed == {"service": "agent", "requeued": [b, c, d], "count": 3}

    typo = cli("dead", "requeue", "--service", "agent", "--id", "999999")
    assert typo.code == 1 and "no outbox row 999999 in service 'agent'" in typo.err
    assert "not dead" not in typo.out

    db.store("agent").mark_dead({b: "again"})
    everything = cli("requeue", "--service", "agent", "--all", "--json").json()  # the alias
    assert everything["requeued"] == [b]
    row = db.store("agent").get(b)
    assert row is not None and row.retry_count == 0 and row.status == Status.PENDING


# -- purge -----------------------------------------------------------------------------------
def test_purge_removes_only_consumed_rows_past_the_age(db: Db, cli) -> None:  # type: ignore[no-untyped-def]
    old = [db.consumed(n, days_ago=10) for n in range(5)]
    recent = db.consumed(10, days_ago=1)
    dead = db.dead(11)
    pending = db.chat(12)

    dry = cli("purge", "--older-than", "7d", "--dry-run", "--json").json()
    assert dry["services"]["agent"] == 5 and dry["total"] == 5 and dry["dry_run"] is True
    assert all(db.status(i) == Status.CONSUMED for i in old)

    human = cli("purge", "--older-than", "7d", "--batch", "2", "--service", "agent")
    assert human.code == 0, human.err
    assert "purged 5 row(s)" in human.out
    assert all(db.status(i) is None for i in old)
    assert db.status(recent) == Status.CONSUMED
    assert db.status(dead) == Status.DEAD
    assert db.status(pending) == Status.PENDING
    again = cli("purge", "--older-than", "7d", "--json").json()
    assert again["total"] == 0


# -- bad input -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (
            ["dead", "list", "--service", "nope"],
            "unknown service 'nope'; known services: active_scheduler, agent, ",
        ),
        (["dead", "list"], "the following arguments are required: --service"),
        (
            ["dead", "list", "--service", "agent", "--limit", "0"],
            "argument --limit: must be between 1 and 500",
        ),
        (
            ["dead", "list", "--service", "agent", "--limit", "lots"],
            "argument --limit: expected an integer",
        ),
        (
            ["dead", "list", "--service", "agent", "--offset", "-1"],
            "argument --offset: must be between 0",
        ),
        (
            ["dead", "list", "--service", "agent", "--event-type", "task.created"],
            "belongs to service 'task'",
        ),
        (
            ["dead", "list", "--service", "agent", "--event-type", "no.such"],
            "unknown event type 'no.such'",
        ),
        (["dead", "show", "--service", "agent", "x"], "argument id: expected an integer"),
        (
            ["dead", "requeue", "--service", "agent"],
            "one of the arguments --id --all --event-type --signature is required",
        ),
        (
            ["dead", "requeue", "--service", "agent", "--all", "--id", "3"],
            "not allowed with argument",
        ),
        (
            ["dead", "requeue", "--service", "agent", "--id", "0"],
            "argument --id: must be between 1",
        ),
        (
            ["dead", "requeue", "--service", "agent", "--event-type", "memory.upsert"],
            "belongs to service 'memory'",
        ),
        (["dead"], "the following arguments are required: action"),
        (["purge"], "the following arguments are required: --older-than"),
        (["purge", "--older-than", "soon"], "expected a duration such as 30s, 5m or 7d"),
        (["purge", "--older-than", "0"], "must be greater than 0"),
        (["purge", "--older-than", "7d", "--batch", "0"], "argument --batch: must be between 1"),
        (["purge", "--older-than", "7d", "--service", "nope"], "unknown service 'nope'"),
    ],
)
def test_bad_input_exits_2_naming_the_problem(db: Db, cli, args: list[str], complaint: str) -> None:  # type: ignore[no-untyped-def]
    run = cli(*args)
    assert run.code == 2, (run.out, run.err)
    assert "error: " in run.err and complaint in run.err
    assert "Traceback" not in run.err


def test_a_negative_age_is_refused_by_its_own_check(db: Db, cli) -> None:  # type: ignore[no-untyped-def]
    run = cli("purge", "--older-than", "-5s")
    assert run.code == 2 and "argument --older-than" in run.err
    assert "cannot be negative" in run.err and "expected one argument" not in run.err


def test_output_cut_short_by_a_closed_pipe_is_not_an_error(db: Db) -> None:
    row_id = db.dead(1)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(ROOT), "OUTBOX_DATABASE_URL": db.url}
    run = subprocess.run(
        f"{sys.executable} -m outbox_app dead show --service agent {row_id} | head -n 1",
        shell=True,
        env=env,
        cwd=str(ROOT),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.stdout.startswith("id") and "Traceback" not in run.stderr, run.stderr
    assert "BrokenPipeError" not in run.stderr


def test_without_a_database_url_commands_refuse_and_create_nothing(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": str(ROOT)}
    for args in (["stats"], ["dead", "list", "--service", "agent"], ["worker"]):
        run = subprocess.run(
            [sys.executable, "-m", "outbox_app", *args],
            env=env,
            cwd=str(tmp_path),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert run.returncode == 2, (args, run.stderr[-2000:])
        assert "OUTBOX_DATABASE_URL is not set" in run.stderr, (args, run.stderr[-2000:])
        assert "Traceback" not in run.stderr
    assert list(tmp_path.glob("*.sqlite3*")) == []  # no database file made up on the spot


def test_read_only_commands_never_create_tables(db: Db, tmp_path: Path) -> None:
    empty = tmp_path / "empty.sqlite3"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(ROOT), "OUTBOX_DATABASE_URL": f"sqlite:///{empty}"}
    run = subprocess.run(
        [sys.executable, "-m", "outbox_app", "stats"],
        env=env,
        cwd=str(ROOT),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 1 and "the outbox tables are not in" in run.stderr, run.stderr
    engine = create_engine(f"sqlite:///{empty}")
    with engine.connect() as conn:
        tables = conn.execute(text("SELECT name FROM sqlite_master WHERE type='table'")).all()
    engine.dispose()
    assert tables == []


def test_the_console_script_exits_1_when_the_database_is_unreachable(db: Db) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(ROOT)}
    env["OUTBOX_DATABASE_URL"] = f"mysql+mysqldb://root:hunter2@127.0.0.1:{free_port()}/nowhere"
    run = subprocess.run(
        [sys.executable, "-m", "outbox_app", "stats"],
        env=env,
        cwd=str(ROOT),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 1
    assert run.stderr.startswith("outbox-app: error: database mysql+mysqldb://root:***@127.0.0.1")
    assert "hunter2" not in run.stderr and "Traceback" not in run.stderr


def test_the_console_script_exits_2_on_an_unknown_service(db: Db) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(ROOT), "OUTBOX_DATABASE_URL": db.url}
    run = subprocess.run(
        [sys.executable, "-m", "outbox_app", "dead", "list", "--service", "nope", "--json"],
        env=env,
        cwd=str(ROOT),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2
    assert run.stderr.startswith("outbox-app: error: unknown service 'nope'")
    assert run.stdout == ""
