"""The live phase's load generator, in a process of its own so that its CPU is counted
apart from the workers': business transactions through ``publish()`` at a steady rate,
each committed id and its commit time written to a file.

``python -m outbox_app.devtools.bench.load '<json job>'``; prints ``LOAD cpu_s=.. wall_s=..``.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from sqlalchemy.orm import Session

from outbox_app.database import make_engine
from outbox_app.devtools.bench.config import BENCH_HANDLER_MODULES, chat
from outbox_app.publish import publish
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


def run(job: LoadJob) -> None:
    default_registry.load_modules(BENCH_HANDLER_MODULES.split(","))
    engine = make_engine(job.database_url, pool_size=job.threads)
    lock = threading.Lock()
    committed: list[tuple[int, float]] = []
    stop_at = time.monotonic() + job.seconds

    def produce(k: int) -> None:
        per = job.rate / job.threads
        begun, sent = time.monotonic(), 0
        while (now := time.monotonic()) < stop_at:
            wait = begun + sent / per - now
            if wait > 0:
                time.sleep(wait)  # pacing: until this thread's next event is due
                continue
            i = job.offset + k * 10**7 + sent
            payload = chat(i)
            payload["conversation_id"] = f"conv-{i % job.keys}"
            with Session(engine) as session, session.begin():
                row_id = publish(session, job.event_type, payload, key=payload["conversation_id"])
            with lock:
                committed.append((row_id, time.time()))
            sent += 1

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
