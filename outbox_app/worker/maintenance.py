"""Worker maintenance: stale-published recovery and retention purge, each in short
transactions (``SKIP LOCKED`` and bounded batches) so the relay is never locked out."""

from __future__ import annotations

import logging

from outbox_app.ordering import KeyOrder
from outbox_app.worker.runtime import Runtime

log = logging.getLogger(__name__)


class Maintenance:
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime

    @property
    def enabled(self) -> bool:
        s = self.rt.settings
        return s.visibility_timeout > 0 or s.retention > 0

    async def run_once(self) -> dict[str, tuple[int, int]]:
        """{service: (recovered, purged)} for the services this worker owns."""
        s, rt = self.rt.settings, self.rt
        done: dict[str, tuple[int, int]] = {}
        for service in rt.services:
            store = rt.stores[service]
            recovered = purged = 0
            if s.visibility_timeout > 0:
                recovered = await rt.executor.run(store.recover_stale, s.visibility_timeout)
                if recovered:
                    rt.metrics.recovered.labels(service).inc(recovered)
                    log.warning(
                        "maintenance %s: %d published row(s) not consumed within %.0fs: "
                        "publishing them again (no attempt spent)",
                        service,
                        recovered,
                        s.visibility_timeout,
                    )
            if s.retention > 0:
                purged = await rt.executor.run(store.purge_consumed, s.retention, s.purge_batch)
                if purged:
                    rt.metrics.purged.labels(service).inc(purged)
                    log.info(
                        "maintenance %s: purged %d consumed row(s) older than %.0fs",
                        service,
                        purged,
                        s.retention,
                    )
            if store.route.ordered:
                released = await rt.executor.run(KeyOrder(store).release_orphans)
                if released:
                    log.warning(
                        "maintenance %s: released %d parked row(s) that waited for nothing "
                        "(a missed wake-up: please report it)",
                        service,
                        released,
                    )
            done[service] = (recovered, purged)
        return done

    async def tick(self) -> None:
        if not self.rt.ready.is_set():
            return
        try:
            await self.run_once()
        except Exception as exc:  # noqa: BLE001 - the timer must keep running
            log.warning("maintenance: round failed: %s: %s", type(exc).__name__, exc)
