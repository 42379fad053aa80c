"""Engines configured for outbox work, and the thread pool that runs database calls.

MySQL/MariaDB: READ COMMITTED (REPEATABLE READ's gap locks let a claim block
producers' inserts), utf8mb4, no pre-ping, no reset on check-in, DATETIME parsed by
``datetime.fromisoformat``. SQLite: WAL, a busy timeout, and
``BEGIN IMMEDIATE`` so writers queue instead of failing on lock upgrade.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from outbox_app.errors import DatabaseUnavailable

T = TypeVar("T")
log = logging.getLogger(__name__)


def _mysql_conversions() -> dict[Any, Any]:
    """mysqlclient's converters, with DATETIME parsed by ``datetime.fromisoformat`` and
    datetimes written by ``isoformat``: mysqlclient does both in Python (about 1.2 us to
    parse, 3.2 us to write), the C methods in 0.1 and 0.8 us, and every claimed or
    consumed row carries one and most handlers' rows write one."""
    from MySQLdb.constants import FIELD_TYPE
    from MySQLdb.converters import conversions
    from MySQLdb.times import DateTime_or_None

    def parse(value: str) -> datetime | None:
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return DateTime_or_None(value)  # type: ignore[no-any-return]  # zero dates

    conv = dict(conversions)
    conv[FIELD_TYPE.DATETIME] = parse
    conv[datetime] = datetime_literal
    return conv


def datetime_literal(value: datetime, conv: object = None) -> str:
    """A datetime as mysqlclient writes it (wall-clock fields, any tzinfo left out)."""
    if value.tzinfo is not None:
        value = value.replace(tzinfo=None)
    return "'" + value.isoformat(" ") + "'"


def make_engine(url: str, pool_size: int = 4, **kwargs: Any) -> Engine:
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend in ("mysql", "mariadb"):
        if "charset" not in parsed.query:
            parsed = parsed.update_query_dict({"charset": "utf8mb4"})
        return create_engine(
            parsed,
            isolation_level="READ COMMITTED",
            pool_size=pool_size,
            max_overflow=2,  # all worker I/O goes through the executor's pool_size threads
            # No pre-ping: it costs a round trip per transaction. A dropped connection
            # fails its transaction, is invalidated, and the caller's retry reconnects.
            pool_recycle=3600,
            # Every checkout ends its own transaction (engine.begin, conn.begin, or
            # Connection.close rolling back an open one), so the pool's extra ROLLBACK
            # on check-in would be a wasted round trip per transaction.
            pool_reset_on_return=None,
            connect_args={"conv": _mysql_conversions(), **kwargs.pop("connect_args", {})},
            **kwargs,
        )
    if backend == "sqlite":
        engine = create_engine(
            parsed,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=pool_size,
            max_overflow=2,  # all worker I/O goes through the executor's pool_size threads
            **kwargs,
        )
        _configure_sqlite(engine)
        return engine
    return create_engine(parsed, pool_size=pool_size, pool_pre_ping=True, **kwargs)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, record: Any) -> None:
        dbapi_conn.isolation_level = None  # let SQLAlchemy's BEGIN below do the work
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


class DatabaseExecutor:
    """Runs blocking database calls in threads, one per pooled connection, so the
    event loop (Kafka heartbeats, the web view) never waits on the database.

    Each call is one or more whole transactions, so a call that InnoDB chose as a
    deadlock victim (rolled back whole) runs again at once, a few times.
    """

    deadlock_retries = 3

    def __init__(self, size: int) -> None:
        self.size = size
        self._pool = ThreadPoolExecutor(max_workers=size, thread_name_prefix="outbox-db")

    async def run(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        call = functools.partial(func, *args, **kwargs)
        for _ in range(self.deadlock_retries):
            try:
                return await self._run(call)
            except DBAPIError as exc:
                if not is_deadlock(exc):
                    raise
                log.debug("deadlock victim, running again: %s", getattr(func, "__qualname__", func))
        return await self._run(call)

    async def _run(self, call: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, call)
        except RuntimeError as exc:
            if "after shutdown" in str(exc):  # a web request racing the worker's stop
                raise DatabaseUnavailable("the worker is shutting down") from None
            raise
        except DBAPIError as exc:
            if exc.connection_invalidated or _is_connection_error(exc):
                raise DatabaseUnavailable(str(exc.orig)) from exc
            raise

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


MYSQL_DEADLOCK = 1213


def _mysql_code(exc: BaseException) -> int | None:
    """The server's error number of a wrapped MySQL/MariaDB error, else None."""
    args = getattr(getattr(exc, "orig", None), "args", None)
    return args[0] if args and isinstance(args[0], int) else None


# The server answered and said no: waiting will not help. 1044/1045/1698 access denied,
# 1049 unknown database.
MYSQL_REFUSALS = (1044, 1045, 1049, 1698)


def refusal(exc: BaseException) -> str | None:
    """What the database refused (credentials, unknown database, a SQLite file that
    cannot be opened), or None when the failure may pass (not up yet, network)."""
    orig = getattr(exc, "orig", exc)
    args = getattr(orig, "args", ())
    if args and args[0] in MYSQL_REFUSALS:
        return str(args[1] if len(args) > 1 else orig)
    if type(orig).__module__.startswith("sqlite3") and "unable to open database" in str(orig):
        return f"{orig} (does its folder exist?)"
    return None


def is_deadlock(exc: BaseException) -> bool:
    """InnoDB rolled this transaction back to break a deadlock: running it again is
    the remedy (a relay's mark and a consumer's lock on the same rows do deadlock now
    and then under load: a consumer batch used to wait 0.2 s, a mark failed its round)."""
    return _mysql_code(exc) == MYSQL_DEADLOCK


# A NOWAIT lock found the row taken: MariaDB says lock wait timeout, MySQL 8 says 3572.
MYSQL_LOCK_BUSY = (1205, 3572)


def is_lock_busy(exc: BaseException) -> bool:
    """Another transaction holds a row this one asked for without waiting."""
    return _mysql_code(exc) in MYSQL_LOCK_BUSY


# Failures of the database, not of the statement: lock wait timeout, deadlock, and the
# connection errors below. A handler that meets one has not failed: its batch runs again.
MYSQL_TRANSIENT = (1205, 1213, 1040)


def is_transient(exc: BaseException) -> bool:
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated or _is_connection_error(exc):
        return True
    sqlite_busy = "database is locked" in str(exc.orig)
    return _mysql_code(exc) in MYSQL_TRANSIENT or sqlite_busy


def _is_connection_error(exc: DBAPIError) -> bool:
    # 2002/2003 can't connect, 2006 gone away, 2013 lost connection, 1927 killed.
    return _mysql_code(exc) in (2002, 2003, 2006, 2013, 1927, 1053)
