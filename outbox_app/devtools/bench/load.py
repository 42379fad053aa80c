"""The live phase's load generator, in a process of its own so that its CPU is counted
apart from the workers': business transactions at a steady rate, each committed id and
its commit time written to a file.

Each transaction writes the row ``publish()`` writes, checked by the same code
(``new_row``), through the database driver directly: an ORM session per transaction cost
0.3-0.4 of a core at 500 events/s, taken from the workers on a two-core machine.

``python -m outbox_app.devtools.bench.load '<json job>'``; prints ``LOAD cpu_s=.. wall_s=..``.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from outbox_app.database import make_engine
from outbox_app.devtools.bench.config import BENCH_HANDLER_MODULES, chat
from outbox_app.publish import new_row
from outbox_app.registry import default_registry


@dataclass
class LoadJob:
    database_url: str
    event_type: str
    keys: int
    rate: float
    seconds: float
    out: str
    threads: int = 2
    offset: int = 0

    def command(self) -> list[str]:
        return [sys.executable, "-m", "outbox_app.devtools.bench.load", json.dumps(asdict(self))]


class RawPublisher:
    """``publish()`` in a transaction of its own, on one driver connection (one thread)."""

    def __init__(self, engine: Engine, event_type: str) -> None:
        insert, _ = new_row(event_type, chat(0), "k", None, None, None, None)
        compiled = insert.compile(dialect=engine.dialect)
        self.sql, self.order, self.fixed = str(compiled), compiled.positiontup, compiled.params
        self.event_type = event_type
        self.conn: Any = engine.raw_connection()

    def publish(self, payload: dict[str, Any], key: str) -> int:
        _, params = new_row(self.event_type, payload, key, None, None, None, None)
        values = {**self.fixed, **params}
        cursor = self.conn.cursor()
        try:
            cursor.execute(self.sql, [values[name] for name in self.order or ()])
            row_id = int(cursor.lastrowid)
        finally:
            cursor.close()
        self.conn.commit()
        return row_id

    def close(self) -> None:
        self.conn.close()


def run(job: LoadJob) -> None:
    default_registry.load_modules(BENCH_HANDLER_MODULES.split(","))
    engine = make_engine(job.database_url, pool_size=job.threads)
    lock = threading.Lock()
    committed: list[tuple[int, float]] = []
    stop_at = time.monotonic() + job.seconds

    def produce(k: int) -> None:
        per = job.rate / job.threads
        publisher = RawPublisher(engine, job.event_type)
        begun, sent = time.monotonic(), 0
        while (now := time.monotonic()) < stop_at:
            wait = begun + sent / per - now
            if wait > 0:
                time.sleep(wait)  # pacing: until this thread's next event is due
                continue
            i = job.offset + k * 10**7 + sent
            payload = chat(i)
            payload["conversation_id"] = f"conv-{i % job.keys}"
            row_id = publisher.publish(payload, payload["conversation_id"])
            with lock:
                committed.append((row_id, time.time()))
            sent += 1
        publisher.close()

    started, cpu0 = time.monotonic(), time.process_time()
    threads = [threading.Thread(target=produce, args=(k,)) for k in range(job.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    cpu, wall = time.process_time() - cpu0, time.monotonic() - started
    Path(job.out).write_text("".join(f"{i}\t{t:.6f}\n" for i, t in committed))
    engine.dispose()
    print(f"LOAD events={len(committed)} cpu_s={cpu:.3f} wall_s={wall:.3f}", flush=True)


if __name__ == "__main__":
    run(LoadJob(**json.loads(sys.argv[1])))
