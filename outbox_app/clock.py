"""The database clock: due-ness and timeouts are decided by the database's time
(``UTC_TIMESTAMP(6)`` on MySQL/MariaDB), never by a worker's clock."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Engine, literal, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import ColumnElement, FunctionElement

from outbox_app.schema import Timestamp


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
    value = seconds if isinstance(seconds, ColumnElement) else literal(float(seconds))
    return utcnow_plus(value)


def db_now(engine: Engine) -> datetime:
    """The database's current time (one round trip)."""
    with engine.connect() as conn:
        value = conn.execute(select(utcnow())).scalar_one()
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
