"""``outbox-app schema sql|check|upgrade``: the tables for a DBA, before anything touches
production, and the changes an existing database needs (``outbox_app.schema_diff``).

``sql`` needs no database (``--dialect``, or the one of ``OUTBOX_DATABASE_URL``). ``check``
only reads: exit 0 when the database matches, 1 with the differences. ``upgrade`` runs
the safe additions (tables, nullable columns, indexes) and lists what needs a DBA (a
narrower type, a NOT NULL column without a default); ``--dry-run`` prints the SQL only.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from sqlalchemy import Engine, text

from outbox_app.errors import ConfigurationError
from outbox_app.ops.cli_support import exits_cleanly as _exits_cleanly
from outbox_app.ops.cli_support import fail as _fail
from outbox_app.ops.commands import _json_arg
from outbox_app.registry import default_registry
from outbox_app.schema_diff import (
    DIALECTS,
    Difference,
    compare,
    create_ddl,
    dialect_named,
    expected_tables,
    render,
)
from outbox_app.settings import Settings


def add_commands(sub: Any) -> None:
    schema = sub.add_parser("schema", help="the tables: SQL for a DBA, check, upgrade")
    actions = schema.add_subparsers(metavar="action", required=True)

    p = actions.add_parser("sql", help="CREATE TABLE/INDEX statements of every table")
    p.add_argument(
        "--dialect",
        choices=DIALECTS,
        help="default: the database of OUTBOX_DATABASE_URL (which is not contacted)",
    )
    p.set_defaults(func=cmd_sql)

    p = actions.add_parser("check", help="compare the database with the code (read-only)")
    _json_arg(p)
    p.set_defaults(func=cmd_check)

    p = actions.add_parser("upgrade", help="add the missing tables, columns and indexes")
    p.add_argument("--dry-run", action="store_true", help="print the SQL, change nothing")
    p.set_defaults(func=cmd_upgrade)


def _tables() -> list[Any]:
    settings = Settings.from_env()
    default_registry.load_modules(settings.handler_modules)
    return expected_tables(default_registry.routes(), default_registry.metadata)


def cmd_sql(ns: argparse.Namespace) -> int:
    name = ns.dialect
    if name is None:
        url = Settings.from_env().database_url
        if not url:
            raise ConfigurationError("name the database: --dialect mariadb|mysql|sqlite")
        from sqlalchemy.engine import make_url

        name = make_url(url).get_backend_name()
    dialect = dialect_named(name)
    print(f"-- outbox-app schema for {name}: outbox tables, then the handlers' tables\n")
    print(render(create_ddl(_tables()), dialect), end="")
    return 0


def _engine() -> Engine:
    from outbox_app.database import make_engine

    return make_engine(Settings.from_env().require_database(), pool_size=1)


@_exits_cleanly
def cmd_check(ns: argparse.Namespace) -> int:
    tables = _tables()
    engine = _engine()
    try:
        with engine.connect() as conn:
            found = compare(conn, tables)
    finally:
        engine.dispose()
    if ns.json:
        doc = [{"table": d.table, "difference": d.what, "automatic": d.fix is not None,
                "hint": d.hint or None} for d in found]  # fmt: skip
        print(json.dumps({"in_sync": not found, "differences": doc}, indent=2))
    elif not found:
        print(f"schema matches the code: {len(tables)} tables")
    else:
        for d in found:
            print(f"{'upgrade' if d.fix is not None else 'by hand'}: {d.describe()}")
    return 1 if found else 0


@_exits_cleanly
def cmd_upgrade(ns: argparse.Namespace) -> int:
    tables = _tables()
    engine = _engine()
    try:
        with engine.connect() as conn:
            found = compare(conn, tables)
            auto = [d for d in found if d.fix is not None]
            manual = [d for d in found if d.fix is None]
            if ns.dry_run:
                print(render([d.fix for d in auto if d.fix is not None], conn.dialect), end="")
            else:
                _apply(conn, auto)
    finally:
        engine.dispose()
    for d in manual:
        print(f"-- by hand: {d.describe()}")
    if not found:
        print("schema matches the code: nothing to do")
    elif not ns.dry_run and auto:
        print(f"applied {len(auto)} change(s)")
    return _fail("some differences need a DBA (above)", 1) if manual else 0


def _apply(conn: Any, changes: list[Difference]) -> None:
    mysql = conn.dialect.name in ("mysql", "mariadb")
    # One upgrade (or worker start-up) at a time, as create_schema does.
    if mysql and conn.execute(text("SELECT GET_LOCK('outbox_app_schema', 60)")).scalar() != 1:
        raise ConfigurationError("another schema change holds the lock outbox_app_schema")
    try:
        for d in changes:
            assert d.fix is not None
            print(render([d.fix], conn.dialect), end="", flush=True)
            conn.execute(d.fix)
            conn.commit()
    finally:
        if mysql:
            conn.execute(text("SELECT RELEASE_LOCK('outbox_app_schema')"))
            conn.commit()
