"""The outbox table, defined once and instantiated per service, and the database clock.

Times are naive UTC with microseconds (``DATETIME(6)`` on MySQL). Due-ness and
timeouts are decided by the database clock, never by a worker's clock.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Engine,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    text,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import ColumnElement, FunctionElement

from outbox_app.routing import Route

log = logging.getLogger(__name__)

MAX_ERROR_CHARS = 2000
MAX_KEY_CHARS = 255

Timestamp = DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
Id = BigInteger().with_variant(Integer, "sqlite")  # SQLite auto-increments INTEGER only
Payload = Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")

_tables: dict[str, Table] = {}


def outbox_table(route: Route) -> Table:
    """The outbox table of one service; built once per table name."""
    table = _tables.get(route.table)
    if table is None:
        name = route.table
        table = Table(
            name,
            MetaData(),
            Column("id", Id, primary_key=True, autoincrement=True),
            Column("event_type", String(128), nullable=False),
            Column("service_name", String(64), nullable=False),
            Column("topic", String(255), nullable=False),
            Column("message_key", String(MAX_KEY_CHARS), nullable=True),
            Column("payload", Payload, nullable=False),
            Column("status", String(16), nullable=False),
            Column("retry_count", Integer, nullable=False, default=0),
            Column("max_retry", Integer, nullable=False, default=20),
            Column("next_retry_at", Timestamp, nullable=True),
            Column("last_error", Text, nullable=True),
            Column("traceparent", String(64), nullable=True),
            Column("published_at", Timestamp, nullable=True),
            Column("consumed_at", Timestamp, nullable=True),
            Column("created_at", Timestamp, nullable=False),
            Column("updated_at", Timestamp, nullable=False),
            Index(f"ix_{name}_due", "status", "next_retry_at"),  # relay claims
            Index(f"ix_{name}_published", "status", "published_at"),  # stale recovery
            Index(f"ix_{name}_consumed", "status", "consumed_at"),  # retention purge
            mysql_engine="InnoDB",
            mysql_charset="utf8mb4",
            mariadb_engine="InnoDB",
            mariadb_charset="utf8mb4",
        )
        _tables[name] = table
    return table


def create_schema(engine: Engine, routes: Iterable[Route], extra: Iterable[MetaData] = ()) -> None:
    """Create missing outbox and business tables; safe when workers start at once."""
    metadatas = [outbox_table(r).metadata for r in routes] + list(extra)
    with engine.connect() as conn:
        is_mysql = conn.dialect.name in ("mysql", "mariadb")
        if is_mysql:
            # Serialise DDL across workers: CREATE INDEX IF NOT EXISTS is not in MySQL 8.
            got = conn.execute(text("SELECT GET_LOCK('outbox_app_schema', 60)")).scalar()
            if got != 1:
                raise OperationalError("GET_LOCK('outbox_app_schema')", {}, Exception("timeout"))
        try:
            for md in metadatas:
                try:
                    md.create_all(conn, checkfirst=True)
                except (OperationalError, ProgrammingError) as exc:
                    # Another process without the lock (SQLite) won the race: fine.
                    if "already exists" not in str(exc):
                        raise
                    conn.rollback()
                    log.debug("schema: %s already created by another worker", md)
            conn.commit()
        finally:
            if is_mysql:
                conn.execute(text("SELECT RELEASE_LOCK('outbox_app_schema')"))
                conn.commit()


def drop_schema(engine: Engine, routes: Iterable[Route], extra: Iterable[MetaData] = ()) -> None:
    with engine.begin() as conn:
        for md in [*extra, *(outbox_table(r).metadata for r in routes)]:
            md.drop_all(conn, checkfirst=True)


# -- database clock ----------------------------------------------------------------


class utcnow(FunctionElement[Any]):
    """The database's current UTC time with microseconds."""

    type = Timestamp
    inherit_cache = True


class utcnow_plus(FunctionElement[Any]):
    """The database's current UTC time plus a number of seconds (a bound float)."""

    type = Timestamp
    inherit_cache = True


@compiles(utcnow)
def _utcnow_default(element: utcnow, compiler: Any, **kw: Any) -> str:
    return "CURRENT_TIMESTAMP"


@compiles(utcnow, "mysql")
@compiles(utcnow, "mariadb")
def _utcnow_mysql(element: utcnow, compiler: Any, **kw: Any) -> str:
    return "UTC_TIMESTAMP(6)"


@compiles(utcnow, "sqlite")
def _utcnow_sqlite(element: utcnow, compiler: Any, **kw: Any) -> str:
    # SQLAlchemy's SQLite DATETIME stores 'YYYY-MM-DD HH:MM:SS.ffffff'; %f gives ms.
    return "strftime('%Y-%m-%d %H:%M:%f000', 'now')"


@compiles(utcnow_plus, "mysql")
@compiles(utcnow_plus, "mariadb")
def _utcnow_plus_mysql(element: utcnow_plus, compiler: Any, **kw: Any) -> str:
    (seconds,) = element.clauses
    return (
        f"DATE_ADD(UTC_TIMESTAMP(6), INTERVAL CAST(ROUND({compiler.process(seconds, **kw)}"
        " * 1000000) AS SIGNED) MICROSECOND)"
    )


@compiles(utcnow_plus, "sqlite")
def _utcnow_plus_sqlite(element: utcnow_plus, compiler: Any, **kw: Any) -> str:
    (seconds,) = element.clauses
    return (
        "strftime('%Y-%m-%d %H:%M:%f000', 'now', "
        f"printf('%+.3f seconds', {compiler.process(seconds, **kw)}))"
    )


def db_time(seconds: float | ColumnElement[Any] = 0.0) -> ColumnElement[Any]:
    """Database now, shifted by ``seconds`` (may be negative)."""
    if isinstance(seconds, int | float) and seconds == 0:
        return utcnow()
    from sqlalchemy import literal

    value = seconds if isinstance(seconds, ColumnElement) else literal(float(seconds))
    return utcnow_plus(value)
