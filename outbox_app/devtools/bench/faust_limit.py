"""The framework's own ceiling: a Faust app with the worker's transport and settings and an
agent that does nothing but batch and ack (the consumer's own read loop, no database),
consuming records already on a topic. Run as a process of its own by the bench:

``python -m outbox_app.devtools.bench.faust_limit <topic> <n>`` (OUTBOX_* settings from the
environment); prints ``FAUST_LIMIT eps=..`` once n records arrived, timed from the first.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import uuid
from typing import Any

import faust

from outbox_app.settings import Settings
from outbox_app.worker.app import faust_options
from outbox_app.worker.batching import run_batches
from outbox_app.worker.compat.transport import OutboxTransportApp
from outbox_app.worker.kafka import KafkaAccess


class EmptyApp(OutboxTransportApp, faust.App):
    """An app with the worker's transport and nothing else."""


def main(topic: str, n: int) -> None:
    settings = Settings.from_env()
    sys.setswitchinterval(settings.gil_switch_interval)  # as the worker runs
    datadir = tempfile.mkdtemp(prefix="outbox-faust-limit-")
    options = faust_options(settings, KafkaAccess.from_settings(settings), datadir)
    options.update(web_enabled=False)
    app = EmptyApp(f"outbox-faust-limit-{uuid.uuid4().hex[:6]}", **options)
    app.fetch_max_wait_ms = settings.fetch_max_wait_ms
    source = app.topic(topic, key_serializer="raw", value_serializer="raw")
    seen = [0]
    first = [0.0]

    async def handle(events: Any, batch: list[Any]) -> None:
        if not first[0]:
            first[0] = time.monotonic()
        for event in batch:
            await events.ack(event)
        seen[0] += len(batch)
        if seen[0] >= n:
            elapsed = time.monotonic() - first[0]
            print(f"FAUST_LIMIT eps={n / max(elapsed, 1e-6):.1f}", flush=True)
            os._exit(0)  # a measurement process: nothing to clean up

    @app.agent(source, isolated_partitions=True)  # type: ignore[untyped-decorator]
    async def empty(stream: Any) -> None:
        events = stream.noack()
        await run_batches(
            events.events(), lambda batch: handle(events, batch), settings.consumer_batch
        )

    sys.argv = ["outbox-faust-limit", "worker", "-l", "warn"]
    app.main()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
