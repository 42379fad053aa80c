"""Shared pieces of the end-to-end tests: a test's stack (database, broker, workers),
publishing, counting effects, reading topics, and a webhook receiver."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session

from outbox_app import default_registry, publish
from outbox_app.database import make_engine
from outbox_app.records import Status
from outbox_app.schema import create_schema, outbox_table
from outbox_app.store import OutboxStore
from outbox_app.worker.topics import topic_partitions
from tests.conftest import fresh_mariadb_database
from tests.support import TestBroker, Worker, free_port, unique_prefix, wait_for, worker_env

HANDLER_MODULES = ["handlers", "tests.e2e.flaky_handlers"]


def prepared_engine(url: str) -> Engine:
    default_registry.load_modules(HANDLER_MODULES)
    engine = make_engine(url, pool_size=4)
    create_schema(engine, default_registry.routes(), default_registry.metadata)
    return engine


def publish_many(engine: Engine, events: list[tuple[str, Any, str | None]], **kw: Any) -> list[int]:
    with Session(engine) as session, session.begin():
        return [publish(session, et, payload, key=key, **kw) for et, payload, key in events]


def status_counts(engine: Engine, service: str) -> dict[str, int]:
    t = outbox_table(default_registry.route(service))
    with engine.connect() as conn:
        rows = conn.execute(select(t.c.status, func.count()).group_by(t.c.status)).all()
    return {status: int(n) for status, n in rows}


def all_consumed(engine: Engine, service: str, expected: int) -> bool:
    return status_counts(engine, service).get("consumed", 0) == expected


def scalar(engine: Engine, sql: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(text(sql)).scalar()


def read_topic(bootstrap: str, topic: str) -> list[Any]:
    """Every record now on ``topic``, from the beginning (a group-less consumer)."""

    async def read() -> list[Any]:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            partitions = (await topic_partitions(admin, [topic]))[topic] or 0
        finally:
            await admin.close()
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            tps = [TopicPartition(topic, p) for p in range(partitions)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            records: list[Any] = []
            while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
                batch = await consumer.getmany(timeout_ms=500)
                for recs in batch.values():
                    records.extend(recs)
            return records
        finally:
            await consumer.stop()

    return asyncio.run(read())


def send_raw(bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes]]) -> None:
    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await producer.start()
        try:
            for key, value in records:
                await producer.send_and_wait(topic, value, key=key)
        finally:
            await producer.stop()

    asyncio.run(send())


def envelope_ids(records: list[Any]) -> list[int]:
    return [json.loads(r.value)["outbox_id"] for r in records]


@dataclass
class Webhook:
    """A local HTTP receiver for notification deliveries; can be made to fail."""

    port: int = field(default_factory=free_port)
    down: bool = False
    received: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    refused_keys: set[str] = field(default_factory=set)  # Idempotency-Keys turned away

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def _handle(self, request: web.Request) -> web.Response:
        key = request.headers.get("Idempotency-Key", "")
        if self.down:
            self.refused_keys.add(key)
            return web.Response(status=503, text="receiver down")
        self.received.append((key, await request.json()))
        return web.Response(status=204)

    def keys(self) -> list[str]:
        return [k for k, _ in self.received]


@contextmanager
def running_webhook() -> Iterator[Webhook]:
    hook = Webhook()
    loop = asyncio.new_event_loop()
    started = threading.Event()
    runner_box: list[web.AppRunner] = []

    async def start() -> None:
        app = web.Application()
        app.router.add_post("/hook", hook._handle)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", hook.port).start()
        runner_box.append(runner)
        started.set()

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    started.wait(10)
    try:
        yield hook
    finally:
        asyncio.run_coroutine_threadsafe(runner_box[0].cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


# -- a stack of one test: database, broker, topics of its own, workers -----------------------
class Stack:
    """A database, a broker, topics of its own, and the workers of one test."""

    def __init__(self, tmp: Path, broker: TestBroker, url: str) -> None:
        self.tmp, self.broker, self.url = tmp, broker, url
        self.prefix = unique_prefix()
        self.engine = prepared_engine(url)
        self.workers: list[Worker] = []

    def topic(self, service: str) -> str:
        return self.prefix + default_registry.route(service).topic

    def worker(self, services: str, **env: str) -> Worker:
        log = self.tmp / f"worker-{len(self.workers)}.log"
        w = Worker(
            worker_env(
                self.url,
                self.broker,
                self.prefix,
                **{
                    "OUTBOX_SERVICES": services,
                    "OUTBOX_HANDLER_MODULES": ",".join(HANDLER_MODULES),
                    **env,
                },
            ),
            log,
        ).start()
        self.workers.append(w)
        return w

    def store(self, service: str) -> OutboxStore:
        return OutboxStore(self.engine, default_registry.route(service))

    def logs(self) -> str:
        return "\n".join(f"--- {w.log_path.name}\n{w.log()[-4000:]}" for w in self.workers)

    def close(self) -> None:
        for w in self.workers:
            w.stop()
        self.engine.dispose()


def effects(engine: Engine, outbox_id: int) -> list[Any]:
    from tests.e2e.flaky_handlers import flaky_effects

    with engine.connect() as conn:
        return conn.execute(
            select(flaky_effects).where(flaky_effects.c.outbox_id == outbox_id)
        ).all()


def wait_status(stack: Stack, service: str, outbox_id: int, status: Status, timeout: float) -> Any:
    store = stack.store(service)

    def reached() -> Any:
        row = store.get(outbox_id)
        return row if row is not None and row.status is status else None

    try:
        return wait_for(reached, timeout, f"outbox id {outbox_id} to be {status.value}")
    except AssertionError:
        print(stack.logs())
        raise


@contextmanager
def running_stack(tmp: Path, broker: TestBroker, database: str) -> Iterator[Stack]:
    """A stack on a fresh database named after ``database``, closed and dropped after."""
    url, drop = fresh_mariadb_database(database)
    s = Stack(tmp, broker, url)
    try:
        yield s
    finally:
        s.close()
        drop()
