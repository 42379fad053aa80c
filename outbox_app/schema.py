"""The outbox table, defined once and instantiated per service, and the column types
business tables share with it (``Id``, ``Timestamp``).

Times are naive UTC with microseconds (``DATETIME(6)`` on MySQL).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

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
            # ordered services: a key's unfinished rows, in id order
            *([Index(f"ix_{name}_key", "message_key", "status", "id")] if route.ordered else []),
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
