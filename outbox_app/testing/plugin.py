"""The pytest plugin (registered as ``outbox_app``): fixtures for testing handlers.

- ``outbox_database_url``: ``OUTBOX_TEST_DATABASE_URL`` when set (a MariaDB/MySQL test
  database, never production: every test's writes are rolled back, but the tables are
  created there), else a SQLite file in the test's temporary folder.
- ``outbox_registry``: the default registry with the handler modules of
  ``OUTBOX_HANDLER_MODULES`` loaded (default ``handlers``); override it to use another.
- ``outbox_harness``: a ``HandlerHarness`` on them, rolled back after the test.

Imports stay inside the fixtures: the plugin loads in every pytest run of an environment
where outbox-app is installed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from outbox_app.registry import Registry
    from outbox_app.testing.harness import HandlerHarness

DATABASE_URL_ENV = "OUTBOX_TEST_DATABASE_URL"


@pytest.fixture
def outbox_database_url(tmp_path: Path) -> str:
    return os.environ.get(DATABASE_URL_ENV) or f"sqlite:///{tmp_path / 'outbox-test.db'}"


@pytest.fixture
def outbox_registry() -> Registry:
    from outbox_app.registry import load_handlers

    return load_handlers()


@pytest.fixture
def outbox_engine(outbox_database_url: str) -> Iterator[Engine]:
    from outbox_app.database import make_engine

    engine = make_engine(outbox_database_url, pool_size=2)
    yield engine
    engine.dispose()


@pytest.fixture
def outbox_harness(outbox_engine: Engine, outbox_registry: Registry) -> Iterator[HandlerHarness]:
    from outbox_app.testing.harness import HandlerHarness

    with HandlerHarness(outbox_engine, outbox_registry) as harness:
        yield harness
