"""A soak from start to verdict: set up the rig, produce while faults are injected, wait
for the backlog to drain, then judge (see ``verify``)."""

from __future__ import annotations

import json
import logging
import random
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select, text

from outbox_app.clock import db_time
from outbox_app.database import make_engine
from outbox_app.devtools.soak.config import FAULT_KINDS, SERVICES, SoakConfig, SoakResult
from outbox_app.devtools.soak.faults import Faults
from outbox_app.devtools.soak.processes import KafkaSoakBroker, SoakBroker, TansuSoakBroker
from outbox_app.devtools.soak.producer import Producer
from outbox_app.devtools.soak.rig import Rig
from outbox_app.devtools.soak.verify import verify
from outbox_app.ordering import KeyOrder
from outbox_app.records import Status
from outbox_app.registry import Registry, default_registry
from outbox_app.schema import create_schema, outbox_table
from outbox_app.store import OutboxStore

LOG_COUNTS = {
    "stale_recovered": r"maintenance \w+: (\d+) published row\(s\) not consumed",
    "publish_failed": r"relay \w+: (\d+) of \d+ row\(s\) not published",
    "events_in_retried_batches": r"consumer \w+: batch of (\d+) rolled back",
}


class Soak:
    def __init__(self, config: SoakConfig) -> None:
        self.cfg = config
        self.seed = config.seed if config.seed is not None else random.randrange(1 << 30)
        self.rng = random.Random(self.seed)
        self.registry: Registry = default_registry
        self.tmp = Path(tempfile.mkdtemp(prefix="outbox-soak-"))
        self.started = time.monotonic()
        self.stop = threading.Event()
        self.rig = Rig(config, self.tmp, self.say, soak_broker(config.broker, self.tmp))
        self.skipped = 0  # dead heads of ordered streams the soak skipped

    def say(self, message: str) -> None:
        if not self.cfg.quiet:
            elapsed = time.monotonic() - self.started
            print(f"soak +{elapsed:6.1f}s {message}", file=sys.stderr, flush=True)

    def run(self) -> SoakResult:
        cfg = self.cfg
        self.registry.load_modules(["handlers", "outbox_app.devtools.soak.handlers"])
        # The producer's pooled connections die with every database fault, by design.
        logging.getLogger("sqlalchemy.pool").setLevel(logging.CRITICAL)
        self.say(f"seed {self.seed}; logs in {self.tmp}")
        result = SoakResult(workdir=str(self.tmp))
        engine: Engine | None = None
        try:
            with self.rig.database_server() as url:
                self.rig.broker.start()
                self.say(
                    f"database server port {getattr(self.rig.server, 'port', '?')}, broker "
                    f"{self.rig.broker.describe()}"
                )
                engine = make_engine(url, pool_size=cfg.producers + 2)
                create_schema(engine, self.registry.routes(), self.registry.metadata)
                begun = time.monotonic()
                app_id = f"outbox-soak-{uuid.uuid4().hex[:6]}"
                self.rig.start_workers(url, app_id, faults_until=time.time() + cfg.seconds)
                result = self._run_phases(engine, begun)
        finally:
            self.stop.set()
            self.rig.close()
            if engine is not None:
                engine.dispose()
        if not result.ok or cfg.keep:
            self.say(f"worker logs kept in {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)
        return result

    def _run_phases(self, engine: Engine, begun: float) -> SoakResult:
        cfg = self.cfg
        producer = Producer(engine, cfg, self.registry, self.seed)
        faults = Faults(self.rig, cfg, self.rng, engine, self.registry, self.say)
        stop_at = begun + cfg.seconds
        threads = [
            threading.Thread(target=self.rig.watch_workers, args=(self.stop,), daemon=True),
            threading.Thread(target=self._skip_dead_steps, args=(engine,), daemon=True),
            threading.Thread(target=producer.run, name="soak-producer", daemon=True),
            threading.Thread(
                target=faults.run,
                args=(begun + min(cfg.warmup, cfg.seconds / 4), stop_at, self.stop),
                name="soak-faults",
                daemon=True,
            ),
        ]
        for t in threads:
            t.start()
        watch, skipper, prod, fault_thread = threads
        self.say(f"producing about {cfg.rate:g} events/s for {cfg.seconds:g}s")
        while time.monotonic() < stop_at:
            time.sleep(min(1.0, max(0.0, stop_at - time.monotonic())))
        if not faults.cycled.wait(timeout=cfg.seconds + 600):
            self.say("the fault schedule did not complete a round of every kind")
        producer.stop.set()
        prod.join()
        produced_at = time.monotonic()
        self.say(f"producer stopped: {len(producer.ledger.committed)} events committed")
        fault_thread.join()
        quiet_from = max(produced_at, faults.last_end or 0.0)
        self.say("waiting for the backlog to drain")
        drained_at = self._wait_drained(engine, quiet_from)
        result = verify(engine, producer.ledger, self.registry)
        result.workdir = str(self.tmp)
        result.seconds = produced_at - begun
        result.drain_s = None if drained_at is None else round(drained_at - quiet_from, 1)
        if drained_at is None:
            result.violations.append(
                f"backlog did not drain within {cfg.drain_timeout:g}s after the last fault"
            )
        elif result.drain_s is not None and result.drain_s > cfg.drain_target:
            result.violations.append(
                f"backlog drained {result.drain_s:.1f}s after the last fault "
                f"(target {cfg.drain_target:g}s)"
            )
        self.stop.set()
        watch.join(5)
        skipper.join(5)
        counts = {k: faults.counts.get(k, 0) for k in cfg.kinds if k != "handler"}
        if "handler" in cfg.kinds:
            counts["handler"] = self.injected_handler_failures()
        result.faults = {k: counts[k] for k in FAULT_KINDS if k in counts}
        result.worker_exits = list(self.rig.exits)
        for exit_note in self.rig.exits:
            result.violations.append(f"a worker exited on its own: {exit_note}")
        for err in faults.errors:
            result.violations.append(f"a fault could not be injected: {err}")
        for kind in cfg.kinds:
            if result.faults.get(kind, 0) == 0:
                result.violations.append(f"fault {kind!r} was selected but never happened")
        result.details.update(faults.details)
        result.details.update(self.log_counts())
        result.details["fault_log"] = faults.log
        result.details["producer_errors"] = dict(producer.ledger.errors)
        result.details["seed"] = self.seed
        result.details["skipped_dead_steps"] = self.skipped
        return result

    def _wait_drained(self, engine: Engine, since: float) -> float | None:
        deadline = since + self.cfg.drain_timeout
        last_report = 0.0
        while time.monotonic() < deadline:
            try:
                live = self.live_rows(engine)
            except Exception:  # noqa: BLE001 - the database may still be coming back
                live = -1
            if live == 0:
                return time.monotonic()
            if time.monotonic() - last_report > 5:
                last_report = time.monotonic()
                self.say(f"{live} row(s) still pending or published")
            time.sleep(0.2)
        return None

    def live_rows(self, engine: Engine) -> int:
        """Rows still on their way: pending, published, or parked behind their key's head."""
        total = 0
        with engine.connect() as conn:
            for service in SERVICES:
                t = outbox_table(self.registry.route(service)).name
                total += int(
                    conn.execute(
                        text(
                            f"SELECT COUNT(*) FROM {t} "
                            "WHERE status IN ('pending', 'published', 'parked')"
                        )
                    ).scalar_one()
                )
        return total

    def _skip_dead_steps(self, engine: Engine) -> None:
        """What an operator does with a dead head of an ordered stream that cannot be
        mended: skip it after a while, so that the stream goes on."""
        store = OutboxStore(engine, self.registry.route("soak_seq"))
        order = KeyOrder(store)
        t = store.table
        while not self.stop.wait(2.0):
            try:
                with engine.connect() as conn:
                    ids = [
                        int(i)
                        for (i,) in conn.execute(
                            select(t.c.id).where(
                                t.c.status == Status.DEAD.value, t.c.updated_at < db_time(-2.0)
                            )
                        )
                    ]
                if ids:
                    self.skipped += len(order.skip(ids))
            except Exception:  # noqa: BLE001 - the database is down right now: next round
                continue

    def log_counts(self) -> dict[str, int]:
        """How often the recovery paths ran, from the worker logs."""
        logs = self.rig.logs()
        return {
            name: sum(int(n) for n in re.findall(pattern, logs))
            for name, pattern in LOG_COUNTS.items()
        }

    def injected_handler_failures(self) -> int:
        from outbox_app.devtools.soak.handlers import INJECTED

        pattern = re.compile(re.escape(INJECTED) + r" outbox_id=(\d+) attempt=(\d+)")
        return len(set(pattern.findall(self.rig.logs())))


def soak_broker(kind: str, workdir: Path) -> SoakBroker:
    if kind == "tansu":
        return TansuSoakBroker(workdir)
    return KafkaSoakBroker(workdir, nodes=3 if kind == "kafka-cluster" else 1)


def _terminate(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)  # unwinds, so the soak stops what it started


def run_soak(config: SoakConfig) -> SoakResult:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)
    result = Soak(config).run()
    if config.json_path:
        Path(config.json_path).write_text(json.dumps(asdict(result), indent=2, default=str) + "\n")
    for problem in result.violations:
        print(f"soak: violation: {problem}", file=sys.stderr)
    print(
        f"soak: drain_s={result.drain_s} transactions={result.transactions} "
        f"failed_tx={result.failed_tx} ambiguous_tx={result.ambiguous_tx} "
        f"expected_dead={result.expected_dead} unexpected_dead={result.unexpected_dead} "
        f"stale_recovered={result.details.get('stale_recovered')} "
        f"publish_failed={result.details.get('publish_failed')}",
        file=sys.stderr,
    )
    print(result.line(), flush=True)
    return result
