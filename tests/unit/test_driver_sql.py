"""The hot statements as driver SQL render what SQLAlchemy renders for the same values."""

from __future__ import annotations

from dataclasses import fields
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import Select, Update
from sqlalchemy.dialects.mysql.mysqldb import MySQLDialect_mysqldb
from sqlalchemy.sql.compiler import SQLCompiler

from outbox_app.driver_sql import DriverStatement
from outbox_app.routing import Route
from outbox_app.schema import outbox_table
from outbox_app.statements import hot_statements

DIALECT = MySQLDialect_mysqldb()
TOKEN = datetime(2026, 12, 2, 15, 4, 5, 123456)
SQL = hot_statements(outbox_table(Route.default("drv")))
# Every hot statement that takes a batch's ids (release_parked takes keys).
WITH_IDS = [
    f.name
    for f in fields(SQL)
    if isinstance(getattr(SQL, f.name), Select | Update) and f.name != "release_parked"
]


class Recorder:
    """Stands for a connection: keeps what ``exec_driver_sql`` was given."""

    def exec_driver_sql(self, sql: str, params: tuple[Any, ...]) -> tuple[str, tuple[Any, ...]]:
        return sql, params


def sqlalchemy_renders(statement: Any, values: dict[str, Any]) -> tuple[str, tuple[Any, ...]]:
    compiled = statement.compile(dialect=DIALECT)
    assert isinstance(compiled, SQLCompiler)
    state = compiled.construct_expanded_state(values)
    return state.statement, state.positional_parameters


def run(driver: DriverStatement, ids: list[int], **params: Any) -> Any:
    return driver.execute(Recorder(), ids, **params)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", WITH_IDS)
def test_each_statement_with_ids_renders_as_sqlalchemy_would(name: str) -> None:
    statement = getattr(SQL, name)
    driver = DriverStatement.build(statement, DIALECT)
    params = {"token": TOKEN} if "token" in driver.names else {}
    sql, values = run(driver, [7, 3, 11], **params)
    assert (sql, values) == sqlalchemy_renders(statement, {"ids": [7, 3, 11], **params})


def test_the_claim_has_no_ids_and_renders_whole() -> None:
    statement = SQL.claim(500, 30.0)
    sql, values = run(DriverStatement.build(statement, DIALECT), [])
    assert (sql, values) == sqlalchemy_renders(statement, {})
    assert "FOR UPDATE SKIP LOCKED" in sql


def test_no_ids_match_no_row() -> None:
    sql, _ = run(DriverStatement.build(SQL.lock, DIALECT), [])
    assert "IN (NULL)" in sql


def test_ids_are_rendered_as_integers_only() -> None:
    driver = DriverStatement.build(SQL.mark_consumed, DIALECT)
    with pytest.raises(ValueError):
        run(driver, ["1); DROP TABLE x; --"])  # type: ignore[list-item]


def test_a_value_given_per_call_is_required() -> None:
    driver = DriverStatement.build(SQL.mark_published, DIALECT)
    with pytest.raises(KeyError):
        run(driver, [1])  # the claim's token is missing
