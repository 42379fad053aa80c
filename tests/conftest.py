"""Shared fixtures: a real MariaDB database per test run, SQLite files, fresh registries."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from outbox_app.database import make_engine
from outbox_app.devtools.kafka import KafkaCluster
from outbox_app.registry import Registry, default_registry
from outbox_app.schema import create_schema
from tests.support import (
    TEST_BROKER,
    KafkaBroker,
    TestBroker,
    tansu_broker,
    unique_prefix,
)

LAYERS = ("unit", "integration", "e2e")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test's folder is its layer: ``unit`` needs nothing, ``integration`` a database
    and/or a broker with our code in the test process, ``e2e`` worker processes."""
    for item in items:
        parts = item.path.parts
        for layer in LAYERS:
            if layer in parts:
                item.add_marker(getattr(pytest.mark, layer))


MYSQL_ADMIN_URL = os.environ.get("OUTBOX_TEST_MYSQL_URL", "mysql+mysqldb://root@127.0.0.1:3306/")


def _admin_engine() -> Engine:
    return create_engine(MYSQL_ADMIN_URL, isolation_level="AUTOCOMMIT")


def fresh_mariadb_database(prefix: str = "outbox_t") -> tuple[str, Callable[[], None]]:
    """A new database and a function that drops it: for tests that run processes."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = _admin_engine()
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
        admin.dispose()

    return make_url(MYSQL_ADMIN_URL).set(database=name).render_as_string(False), drop


@pytest.fixture
def mariadb_db() -> Iterator[str]:
    url, drop = fresh_mariadb_database()
    try:
        yield url
    finally:
        drop()


@pytest.fixture(params=["sqlite", "mariadb"])
def db_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:  # type: ignore[no-untyped-def]
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'outbox.sqlite3'}"
    else:
        yield request.getfixturevalue("mariadb_db")


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url, pool_size=4)
    try:
        yield eng
    finally:
        eng.dispose()


@pytest.fixture
def registry() -> Registry:
    reg = Registry()
    reg.register_event("chat.persist", "agent")
    reg.register_event("task.created", "task")
    return reg


@pytest.fixture
def schema(engine: Engine, registry: Registry) -> Engine:
    create_schema(engine, registry.routes())
    return engine


@pytest.fixture(scope="session")
def kafka_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    """One Apache Kafka node for the whole session (started on first use). Its log stays
    in pytest's temporary folder (the last three runs are kept)."""
    cluster = KafkaCluster(tmp_path_factory.mktemp("kafka"), nodes=1).start()
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture(scope="module")
def broker(request: pytest.FixtureRequest) -> Iterator[TestBroker]:
    """The broker of this module's tests (``OUTBOX_TEST_BROKER``); each test uses topics and
    groups of its own (``unique_prefix``)."""
    if TEST_BROKER == "tansu":
        with tansu_broker() as b:
            yield b
    else:
        yield KafkaBroker(request.getfixturevalue("kafka_cluster"))


@pytest.fixture
def topic_prefix() -> str:
    return unique_prefix()


@pytest.fixture(autouse=True, scope="module")
def _isolated_default_registry() -> Iterator[None]:
    """Handlers a test module loads into the default registry leave with it. The business
    handlers (and the e2e tests' failing ones) are loaded first: imports register once per
    process, so they must stay."""
    default_registry.load_modules(["handlers", "tests.e2e.flaky_handlers"])
    snapshot = default_registry.snapshot()
    yield
    default_registry.restore(snapshot)
