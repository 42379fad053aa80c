"""The schema for DBAs: ``outbox-app schema sql`` builds a database a worker accepts,
``schema check`` finds what an old or hand-made database lacks, ``schema upgrade`` adds
it without touching the rows, and a worker refuses to start on tables that differ."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from sqlalchemy import Engine, func, inspect, select, text
from sqlalchemy.orm import Session

from handlers.memory import memories
from outbox_app import default_registry, publish
from outbox_app.errors import SchemaMismatch
from outbox_app.ops.cli import main
from outbox_app.schema import create_schema, outbox_table
from outbox_app.schema_diff import compare, expected_tables
from outbox_app.settings import Settings
from outbox_app.worker.runtime import Runtime


@dataclass
class Run:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(
    db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Iterator[object]:
    for name in list(os.environ):
        if name.startswith("OUTBOX_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("OUTBOX_DATABASE_URL", db_url)

    def run(*args: str) -> Run:
        try:
            code = main(list(args))
        except SystemExit as exc:
            code = int(exc.code or 0)
        got = capsys.readouterr()
        return Run(code, got.out, got.err)

    yield run


def tables() -> list:  # type: ignore[type-arg]
    return expected_tables(default_registry.routes(), default_registry.metadata)


def differences(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return [d.describe() for d in compare(conn, tables())]


def run_script(engine: Engine, sql: str) -> None:
    statements = [s.strip() for s in sql.split(";\n") if s.strip() and not s.startswith("--")]
    with engine.begin() as conn:
        for statement in statements:
            conn.execute(text(statement.removeprefix("-- ").strip()))


def test_the_sql_for_a_dba_builds_a_schema_the_worker_accepts(engine: Engine, cli) -> None:  # type: ignore[no-untyped-def]
    run = cli("schema", "sql")  # the dialect of OUTBOX_DATABASE_URL
    assert run.code == 0, run.err
    body = "\n".join(line for line in run.out.splitlines() if not line.startswith("--"))
    run_script(engine, body)
    assert differences(engine) == []
    assert cli("schema", "check").code == 0


def test_sql_needs_no_database_and_names_a_wrong_dialect(cli) -> None:  # type: ignore[no-untyped-def]
    run = cli("schema", "sql", "--dialect", "mariadb")
    assert run.code == 0
    assert "CREATE TABLE agent_outbox" in run.out and "payload MEDIUMTEXT NOT NULL" in run.out
    assert "ENGINE=InnoDB" in run.out and "CREATE UNIQUE INDEX" not in run.out
    bad = cli("schema", "sql", "--dialect", "oracle")
    assert bad.code == 2 and "invalid choice: 'oracle'" in bad.err


def test_check_and_upgrade_an_old_database_keeping_its_rows(engine: Engine, cli) -> None:  # type: ignore[no-untyped-def]
    create_schema(engine, default_registry.routes(), default_registry.metadata)
    with Session(engine) as s, s.begin():
        kept = publish(s, "memory.upsert", {"user_id": 1, "key": "k", "value": "v"})
    outbox = outbox_table(default_registry.route("agent")).name
    with engine.begin() as conn:  # what an older version or a hand-made schema lacks
        conn.execute(
            text(f"DROP INDEX ix_{outbox}_due" + ("" if _sqlite(engine) else f" ON {outbox}"))
        )
        conn.execute(text(f"ALTER TABLE {outbox} DROP COLUMN traceparent"))
        conn.execute(text("DROP TABLE tasks"))

    check = cli("schema", "check")
    assert check.code == 1
    assert f"upgrade: table {outbox}: column traceparent missing" in check.out
    assert (
        f"upgrade: table {outbox}: index ix_{outbox}_due ('status', 'next_retry_at') missing"
        in check.out
    )
    assert "upgrade: table tasks: missing" in check.out

    dry = cli("schema", "upgrade", "--dry-run")
    assert dry.code == 0
    assert f"ALTER TABLE {outbox} ADD COLUMN traceparent VARCHAR(64);" in dry.out
    assert differences(engine) != []  # a dry run changes nothing

    done = cli("schema", "upgrade")
    assert done.code == 0, done.err
    assert "applied 4 change(s)" in done.out  # column, index, table and its index
    assert differences(engine) == []
    assert cli("schema", "upgrade").out.strip() == "schema matches the code: nothing to do"
    memory = outbox_table(default_registry.route("memory"))
    with engine.connect() as conn:
        assert conn.execute(select(memory.c.id)).scalars().all() == [kept]


def test_a_narrower_column_needs_a_dba_and_says_how(mariadb_db: str, cli, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from outbox_app.database import make_engine

    monkeypatch.setenv("OUTBOX_DATABASE_URL", mariadb_db)
    engine = make_engine(mariadb_db)
    try:
        create_schema(engine, default_registry.routes(), default_registry.metadata)
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE agent_outbox MODIFY payload TEXT NOT NULL"))
            conn.execute(text("ALTER TABLE memories MODIFY last_outbox_id INT NOT NULL"))
            conn.execute(text("DROP INDEX uq_memories_user_key ON memories"))
        run = cli("schema", "upgrade")
        assert run.code == 1
        assert (
            "-- by hand: table agent_outbox: column payload is TEXT, expected MEDIUMTEXT "
            "(widen it: ALTER TABLE agent_outbox MODIFY payload MEDIUMTEXT NOT NULL)"
        ) in run.out
        assert "some differences need a DBA" in run.err
        # The safe part was applied: the unique index is back.
        with engine.connect() as conn:
            names = {i["name"] for i in inspect(conn).get_indexes("memories")}
        assert "uq_memories_user_key" in names
        assert len(differences(engine)) == 2
    finally:
        engine.dispose()


def test_check_reads_only(engine: Engine, cli) -> None:  # type: ignore[no-untyped-def]
    run = cli("schema", "check", "--json")
    assert run.code == 1
    with engine.connect() as conn:
        assert inspect(conn).get_table_names() == []


# -- the worker's start-up check -------------------------------------------------------------
def start(engine: Engine, url: str, mode: str) -> None:
    rt = Runtime(Settings(database_url=url, schema_mode=mode), default_registry, ["memory"])
    try:
        asyncio.run(rt.start())
    finally:
        rt.close()


def test_a_worker_refuses_tables_that_differ(engine: Engine, db_url: str) -> None:
    create_schema(engine, default_registry.routes(), default_registry.metadata)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE memories"))
        conn.execute(text("ALTER TABLE memory_outbox DROP COLUMN traceparent"))
    with pytest.raises(SchemaMismatch) as caught:
        start(engine, db_url, "check")  # creates nothing: both are reported
    assert "table memories: missing" in str(caught.value)
    assert "table memory_outbox: column traceparent missing" in str(caught.value)
    assert "outbox-app schema upgrade" in str(caught.value)

    with pytest.raises(SchemaMismatch) as caught:
        start(engine, db_url, "create")  # the missing table is created, the column is not
    assert "memories" not in str(caught.value)
    assert "column traceparent missing" in str(caught.value)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(memories)).scalar_one() == 0


def test_a_worker_on_a_matching_schema_starts(engine: Engine, db_url: str) -> None:
    start(engine, db_url, "create")  # an empty database: everything created, then checked
    start(engine, db_url, "check")
    assert differences(engine) == []


def test_the_schema_mode_setting_is_checked() -> None:
    from outbox_app.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="OUTBOX_SCHEMA must be one of create, check"):
        Settings(schema_mode="migrate")


def _sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"
