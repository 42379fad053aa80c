"""The worker's faster mysqlclient converters write and read what mysqlclient's own do."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from MySQLdb.converters import conversions
from MySQLdb.times import DateTime2literal

from outbox_app.database import _mysql_conversions, datetime_literal

VALUES = [
    datetime(2026, 12, 2, 7, 25, 50, 7963),
    datetime(2026, 12, 2, 7, 25, 50),  # no microseconds: none written
    datetime(1999, 1, 1, 0, 0, 0, 1),
    datetime(2026, 12, 2, 7, 25, 50, 120000, tzinfo=UTC),
    datetime(2026, 12, 2, 9, 25, 50, tzinfo=timezone(timedelta(hours=2))),  # wall clock kept
]


@pytest.mark.parametrize("value", VALUES, ids=str)
def test_a_datetime_is_written_as_mysqlclient_writes_it(value: datetime) -> None:
    assert datetime_literal(value).encode() == DateTime2literal(value, conversions)


def test_the_engine_uses_both_converters() -> None:
    from MySQLdb.constants import FIELD_TYPE

    conv = _mysql_conversions()
    assert conv[datetime] is datetime_literal
    assert conv[FIELD_TYPE.DATETIME]("2026-12-02 07:25:50.007963") == VALUES[0]
    assert conv[FIELD_TYPE.DATETIME]("0000-00-00 00:00:00") is None  # a zero date
