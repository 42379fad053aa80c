"""The ceilings of this machine, measured in the same run as the outbox: raw aiokafka
producing and consuming envelope-sized records on the same broker, and raw database
commits of the consume transaction's shape (no Python work per event)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime

from sqlalchemy import Engine, text

from outbox_app.devtools.bench.config import KEYS, Progress, chat


async def kafka_limit(
    bootstrap: str, n: int, progress: Progress, partitions: int = 4
) -> tuple[float, str]:
    """Raw aiokafka: produce n envelope-sized records and consume them, pipelined; the
    events/s and the topic (which ``faust_limit`` reads again)."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    topic = f"bench.limit.{uuid.uuid4().hex[:6]}"
    value = json.dumps({"v": 1, "outbox_id": 1, "payload": chat(1)}).encode()
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=50
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=256 * 1024, acks="all"
    )
    await consumer.start()
    await producer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        # Asked until every partition's new leader answers (seek_to_beginning asks once
        # and logs NotLeaderForPartition as an error, then waits out its retry).
        first = await consumer.beginning_offsets(tps)
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, first[tp])
        received = 0
        started = time.monotonic()

        async def produce() -> None:
            futures = [
                await producer.send(topic, value, key=f"conv-{i % KEYS}".encode()) for i in range(n)
            ]
            await asyncio.gather(*futures)

        sending = asyncio.create_task(produce())
        while received < n:
            batch = await consumer.getmany(timeout_ms=1000, max_records=5000)
            received += sum(len(v) for v in batch.values())
            progress.update("limits", received, n)
        await sending
        return n / (time.monotonic() - started), topic
    finally:
        await producer.stop()
        await consumer.stop()


def faust_limit(topic: str, n: int, env: dict[str, str], timeout: float) -> float:
    """The empty Faust agent of ``faust_limit.py`` on the records of ``kafka_limit``."""
    run = subprocess.run(
        [sys.executable, "-m", "outbox_app.devtools.bench.faust_limit", topic, str(n)],
        env={**os.environ, **env, "OUTBOX_WEB_ENABLED": "false"},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    # Faust sends a worker's stdout to its log: the line may come on either stream.
    found = re.search(r"FAUST_LIMIT eps=([\d.]+)", run.stdout + run.stderr)
    if found is not None:
        return float(found.group(1))
    raise RuntimeError(f"bench: the empty Faust agent failed: {run.stderr[-2000:]}")


def db_limit(engine: Engine, n: int, progress: Progress, batch: int = 500) -> float:
    """Raw commits of the consume transaction's shape: lock a batch of outbox rows, insert
    one business row each, mark them consumed, commit."""
    sqlite = engine.dialect.name == "sqlite"
    ddl = [
        "CREATE TABLE bench_limit_outbox (id BIGINT PRIMARY KEY, status VARCHAR(16), "
        "payload TEXT, consumed_at DATETIME(6) NULL)",
        "CREATE TABLE bench_limit_effects (id BIGINT AUTO_INCREMENT PRIMARY KEY, "
        "outbox_id BIGINT, user_id BIGINT, conversation_id VARCHAR(64), role VARCHAR(16), "
        "message TEXT, created_at DATETIME(6), KEY (outbox_id))",
    ]
    if sqlite:
        ddl = [
            s.replace("DATETIME(6)", "TEXT")
            .replace("AUTO_INCREMENT", "")
            .replace(", KEY (outbox_id)", "")
            for s in ddl
        ]
    payload = json.dumps(chat(1))
    with engine.begin() as conn:
        for sql in ddl:
            conn.execute(text(sql))
        for start in range(1, n + 1, 5000):
            conn.execute(
                text("INSERT INTO bench_limit_outbox VALUES (:id, 'pending', :p, NULL)"),
                [{"id": i, "p": payload} for i in range(start, min(start + 5000, n + 1))],
            )
    now = "CURRENT_TIMESTAMP" if sqlite else "UTC_TIMESTAMP(6)"
    lock = "" if sqlite else " FOR UPDATE"
    started = time.monotonic()
    for start in range(1, n + 1, batch):
        ids = list(range(start, min(start + batch, n + 1)))
        in_list = ",".join(map(str, ids))
        with engine.begin() as conn:
            rows = conn.execute(
                text(
                    "SELECT id, status, payload FROM bench_limit_outbox "
                    f"WHERE id IN ({in_list}) ORDER BY id{lock}"
                )
            ).all()
            conn.execute(
                text(
                    "INSERT INTO bench_limit_effects (outbox_id, user_id, conversation_id, "
                    "role, message, created_at) VALUES (:o, :u, :c, :r, :m, :t)"
                ),
                [
                    {
                        "o": r.id,
                        "u": 1,
                        "c": "conv-1",
                        "r": "user",
                        "m": r.payload,
                        "t": datetime.now(UTC).replace(tzinfo=None),
                    }
                    for r in rows
                ],
            )
            conn.execute(
                text(
                    f"UPDATE bench_limit_outbox SET status='consumed', consumed_at={now} "
                    f"WHERE id IN ({in_list}) AND status IN ('pending', 'published')"
                )
            )
        progress.update("limits", ids[-1], n)
    elapsed = time.monotonic() - started
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE bench_limit_outbox"))
        conn.execute(text("DROP TABLE bench_limit_effects"))
    return n / elapsed
