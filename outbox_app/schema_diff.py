"""The schema the code expects (outbox tables of the registered services and the handlers'
business tables) against the one a database has, and the DDL between them: what
``outbox-app schema sql|check|upgrade`` print and run, and what a worker checks at
start-up.

Types are compared on MySQL/MariaDB only (SQLite's are affinities): an existing column
of the same family and at least the expected capacity is fine (``BIGINT`` for ``INT``,
``MEDIUMTEXT`` for ``TEXT``, ``VARCHAR(255)`` for ``VARCHAR(128)``, ``DATETIME(6)``),
a narrower one is a difference. Extra tables, columns and indexes are the database's
business and never reported.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Column, Connection, MetaData, Table, UniqueConstraint, inspect
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.schema import CreateColumn, CreateIndex, CreateTable, ExecutableDDLElement

from outbox_app.errors import ConfigurationError
from outbox_app.routing import Route
from outbox_app.schema import outbox_table

DIALECTS = ("mariadb", "mysql", "sqlite")


@dataclass(frozen=True)
class Difference:
    table: str
    what: str  # e.g. "column payload is TEXT, expected MEDIUMTEXT"
    fix: ExecutableDDLElement | None = None  # what `schema upgrade` runs; None: for a DBA to decide
    hint: str = ""  # how to fix it by hand, when there is no safe automatic fix

    def describe(self) -> str:
        extra = f" ({self.hint})" if self.hint else ""
        return f"table {self.table}: {self.what}{extra}"


def expected_tables(routes: Iterable[Route], metadatas: Iterable[MetaData]) -> list[Table]:
    tables = [outbox_table(r) for r in routes]
    for md in metadatas:
        tables += list(md.sorted_tables)
    return tables


def dialect_named(name: str) -> Dialect:
    if name not in DIALECTS:
        raise ConfigurationError(f"unknown dialect {name!r}: one of {', '.join(DIALECTS)}")
    driver = {"mariadb": "mariadb+mysqldb", "mysql": "mysql+mysqldb", "sqlite": "sqlite"}[name]
    dialect: Dialect = make_url(f"{driver}://").get_dialect()()
    return dialect


def create_ddl(tables: Sequence[Table]) -> list[ExecutableDDLElement]:
    """Every table and index, as a DBA would run them on an empty database."""
    out: list[ExecutableDDLElement] = []
    for table in tables:
        out.append(CreateTable(table))
        out += [CreateIndex(i) for i in sorted(table.indexes, key=lambda i: str(i.name))]
    return out


def render(statements: Iterable[ExecutableDDLElement], dialect: Dialect) -> str:
    return "".join(f"{str(s.compile(dialect=dialect)).strip()};\n\n" for s in statements)


def compare(conn: Connection, tables: Sequence[Table]) -> list[Difference]:
    """What the database lacks, table by table (read-only: only the inspector's queries)."""
    insp = inspect(conn)
    have = set(insp.get_table_names())
    typed = conn.dialect.name in ("mysql", "mariadb")
    out: list[Difference] = []
    for table in tables:
        if table.name not in have:
            out.append(Difference(table.name, "missing", CreateTable(table)))
            out += [
                Difference(table.name, f"index {i.name} missing", CreateIndex(i))
                for i in sorted(table.indexes, key=lambda i: str(i.name))
            ]
            continue
        columns = {c["name"]: c for c in insp.get_columns(table.name)}
        for col in table.columns:
            found = columns.get(col.name)
            if found is None:
                out.append(_missing_column(table, col))
                continue
            if not found["nullable"] and col.nullable and not col.primary_key:
                out.append(
                    Difference(
                        table.name,
                        f"column {col.name} is NOT NULL, expected NULL",
                        hint="rows without it could not be written: make it nullable",
                    )
                )
            if typed:
                problem = _type_problem(col, found["type"], conn.dialect)
                if problem:
                    spec = str(CreateColumn(col).compile(dialect=conn.dialect)).strip()
                    modify = f"ALTER TABLE {table.name} MODIFY {spec}"
                    out.append(Difference(table.name, f"column {col.name} {problem}",
                                          hint=f"widen it: {modify}"))  # fmt: skip
        out += _missing_indexes(conn, table)
    return out


def _missing_column(table: Table, col: Column[Any]) -> Difference:
    what = f"column {col.name} missing"
    if col.nullable or col.server_default is not None:
        return Difference(table.name, what, _AddColumn(table, col))
    return Difference(
        table.name,
        what,
        hint="NOT NULL without a server default: add it with a default for existing rows",
    )


def _missing_indexes(conn: Connection, table: Table) -> list[Difference]:
    insp = inspect(conn)
    present = [tuple(i["column_names"]) for i in insp.get_indexes(table.name)]
    unique = {tuple(i["column_names"]) for i in insp.get_indexes(table.name) if i["unique"]}
    unique |= {tuple(u["column_names"]) for u in insp.get_unique_constraints(table.name)}
    pk = tuple(insp.get_pk_constraint(table.name)["constrained_columns"])
    out: list[Difference] = []
    for index in sorted(table.indexes, key=lambda i: str(i.name)):
        cols = tuple(c.name for c in index.columns)
        pool = unique if index.unique else set(present) | unique | {pk}
        if not any(p[: len(cols)] == cols for p in pool):
            out.append(
                Difference(table.name, f"index {index.name} {cols} missing", CreateIndex(index))
            )
    for uq in table.constraints:
        if isinstance(uq, UniqueConstraint):
            cols = tuple(c.name for c in uq.columns)
            if cols not in unique and cols != pk:
                name = str(uq.name or f"uq_{table.name}_{'_'.join(cols)}")
                fix = _AddUnique(table, name, cols)
                out.append(Difference(table.name, f"unique {cols} missing", fix,
                                      hint="fails while duplicate rows exist"))  # fmt: skip
    return out


class _AddColumn(ExecutableDDLElement):
    """ALTER TABLE ... ADD COLUMN (SQLAlchemy has no construct for it outside Alembic)."""

    def __init__(self, table: Table, column: Column[Any]) -> None:
        self.table, self.column = table, column


class _AddUnique(ExecutableDDLElement):
    """CREATE UNIQUE INDEX for a missing unique constraint (building an ``Index`` object
    would attach it to the table)."""

    def __init__(self, table: Table, name: str, columns: Sequence[str]) -> None:
        self.table, self.name, self.columns = table, name, list(columns)


@compiles(_AddColumn)
def _add_column_sql(element: _AddColumn, compiler: Any, **kw: Any) -> str:
    table = compiler.preparer.format_table(element.table)
    return f"ALTER TABLE {table} ADD COLUMN {compiler.get_column_specification(element.column)}"


@compiles(_AddUnique)
def _add_unique_sql(element: _AddUnique, compiler: Any, **kw: Any) -> str:
    q = compiler.preparer
    cols = ", ".join(q.quote(c) for c in element.columns)
    return (
        f"CREATE UNIQUE INDEX {q.quote(element.name)} ON {q.format_table(element.table)} ({cols})"
    )


# -- types -------------------------------------------------------------------------------
_INT_BYTES = {"TINYINT": 1, "SMALLINT": 2, "MEDIUMINT": 3, "INT": 4, "INTEGER": 4, "BIGINT": 8}
_TEXT_BYTES = {"TINYTEXT": 255, "TEXT": 65535, "MEDIUMTEXT": 16777215, "LONGTEXT": 4294967295}
_SIZED = ("VARCHAR", "CHAR", "DATETIME", "TIMESTAMP")


def _type_problem(col: Column[Any], found: object, dialect: Dialect) -> str | None:
    want = str(col.type.compile(dialect=dialect))
    got = str(found.compile(dialect=dialect))  # type: ignore[attr-defined]
    wname, wsize = _parse(want)
    gname, gsize = _parse(got)
    for family in (_INT_BYTES, _TEXT_BYTES):
        if wname in family:
            if gname in family and family[gname] >= family[wname]:
                return None
            return f"is {got}, expected {want}"
    if wname in _SIZED:
        same = gname == wname or {gname, wname} <= {"DATETIME", "TIMESTAMP"}
        if same and gsize >= wsize:
            return None
        return f"is {got}, expected {want}"
    return None if gname == wname else f"is {got}, expected {want}"


def _parse(compiled: str) -> tuple[str, int]:
    m = re.match(r"\s*(\w+)(?:\((\d+)\))?", compiled.upper())
    if m is None:
        return compiled.upper(), 0
    return m.group(1), int(m.group(2) or 0)
