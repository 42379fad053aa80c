"""The outbox's hot statements as the driver's own SQL, rendered once per dialect and run
with ``Connection.exec_driver_sql``.

On every call of a compiled statement SQLAlchemy looks it up in its cache, builds the
parameters, renders a batch's ids into ``IN (...)`` one literal at a time and sets up
type processing: for the short statements of a relay round and a consume transaction
that was more Python time than the server spent on them. Here the SQL is cut once where
the ids go; a call joins the ids (integers: nothing to quote) and passes the other
values in the compiled order, through SQLAlchemy's connection, so its transaction, error
wrapping, invalidation of a lost connection and events stay as they were.

Rows come back as the driver gives them, without SQLAlchemy's result types: that is
used only where the two agree (MySQL/MariaDB through mysqlclient, whose conversions are
the engine's own, ``database.py``); SQLite keeps the compiled statements.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, CursorResult, Dialect, Engine
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

# Stands for the ids while the SQL is rendered, then marks where they are cut in.
_SENTINEL = 7_340_237_461_919
IDS = "ids"


def driver_sql_applies(engine: Engine) -> bool:
    """Whether rows from the driver equal what SQLAlchemy's types would make of them."""
    return engine.dialect.name in ("mysql", "mariadb") and engine.dialect.driver == "mysqldb"


@dataclass(frozen=True)
class DriverStatement:
    parts: tuple[str, ...]  # the SQL around the ids (one part: the statement has none)
    names: tuple[str, ...]  # the positional parameters, in order
    fixed: Mapping[str, Any]  # values rendered with the statement, already processed
    processors: Mapping[str, Any]  # for the values given per call

    @classmethod
    def build(cls, statement: ClauseElement, dialect: Dialect) -> DriverStatement:
        compiled = statement.compile(dialect=dialect)
        if not isinstance(compiled, SQLCompiler):
            raise TypeError(f"not a SQL statement: {statement!r}")
        given = {name for name, bind in compiled.binds.items() if bind.required}
        has_ids = IDS in compiled.binds
        values: dict[str, Any] = dict.fromkeys(given - {IDS})
        if has_ids:
            values[IDS] = [_SENTINEL]
        state = compiled.construct_expanded_state(values)
        parts = tuple(state.statement.split(str(_SENTINEL))) if has_ids else (state.statement,)
        if len(parts) != (2 if has_ids else 1):
            raise ValueError(f"cannot place the ids in: {state.statement}")
        names = tuple(state.positiontup or ())
        processors = dict(state.processors)
        fixed = {
            name: _processed(processors, name, state.parameters[name])
            for name in names
            if name not in given
        }
        return cls(parts, names, fixed, {n: processors[n] for n in given if n in processors})

    def execute(
        self, conn: Connection, ids: Iterable[int] = (), **params: Any
    ) -> CursorResult[Any]:
        sql = self.parts[0]
        if len(self.parts) == 2:
            # No ids: IN (NULL) matches no row, as SQLAlchemy's empty IN does.
            sql = (", ".join([str(int(i)) for i in ids]) or "NULL").join(self.parts)
        values = tuple(
            _processed(self.processors, n, params[n]) if n in params else self.fixed[n]
            for n in self.names
        )
        return conn.exec_driver_sql(sql, values)


def _processed(processors: Mapping[str, Any], name: str, value: Any) -> Any:
    process = processors.get(name)
    return value if process is None or value is None else process(value)
