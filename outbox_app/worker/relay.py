"""The relay: claim due rows, publish them with their keys, wait for the acks, mark
them published in bulk. Nothing else: no business logic, no schema work."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable
from typing import Any

from outbox_app.envelope import encode
from outbox_app.records import Delivery
from outbox_app.store import Claim
from outbox_app.worker.producer import PublishFunc
from outbox_app.worker.runtime import Runtime

log = logging.getLogger(__name__)

# Rounds whose acks and marking may still be outstanding while the next round claims.
MAX_ROUNDS_IN_FLIGHT = 3


class Relay:
    def __init__(self, runtime: Runtime, service: str, publish: PublishFunc) -> None:
        self.rt = runtime
        self.service = service
        self.store = runtime.stores[service]
        self.topic = runtime.topics[service]
        self.publish = publish
        self._announced = False
        self._failing = False
        self._pause = 0.0  # current idle back-off, between the two relay intervals
        self._next_poll = 0.0

    async def run_once(self) -> int:
        """One complete round: returns how many rows were claimed (published or not)."""
        claimed, settling = await self._start_round()
        if settling is not None:
            await settling
        return claimed

    async def _start_round(self) -> tuple[int, Awaitable[None] | None]:
        """Claim and send; the acks settle in the returned task, so the next round's
        claim overlaps them. Sends are issued round after round, so rows of a key
        still reach its partition in claim order."""
        s = self.rt.settings
        claim = await self.rt.executor.run(self.store.claim_due, s.relay_batch, s.claim_lease)
        if claim is None:
            return 0, None
        started = time.monotonic()
        sent = await self._send_all(claim.rows)
        settling = asyncio.ensure_future(self._settle(claim, sent, started))
        return len(claim.rows), settling

    async def _settle(
        self,
        claim: Claim,
        sent: list[tuple[list[int], Any]],
        started: float,
    ) -> None:
        errors = await self._wait_acks(sent)
        ok = [r.id for r in claim.rows if r.id not in errors]
        if ok:
            await self.rt.executor.run(self.store.mark_published, ok, claim.token)
        m = self.rt.metrics
        m.relay_batch.labels(self.service).observe(len(claim.rows))
        m.publish_latency.labels(self.service).observe(time.monotonic() - started)
        m.published.labels(self.service).inc(len(ok))
        if errors:
            outcome = await self.rt.executor.run(
                self.store.record_failures, errors, token=claim.token
            )
            m.publish_failures.labels(self.service).inc(len(errors))
            m.dead.labels(self.service).inc(len(outcome.dead))
            first_id, first = next(iter(errors.items()))
            log.warning(
                "relay %s: %d of %d row(s) not published (%d will retry, %d dead); "
                "first: outbox id %d: %s",
                self.service,
                len(errors),
                len(claim.rows),
                len(outcome.retried),
                len(outcome.dead),
                first_id,
                first,
            )

    async def _send_all(self, rows: list[Delivery]) -> list[tuple[list[int], Any]]:
        """Hand the round to the producer: (row ids, ack future) per batch."""
        sent = await self.publish(self.topic, [encode(row) for row in rows])
        return [([rows[i].id for i in indices], future) for indices, future in sent]

    async def _wait_acks(self, futures: list[tuple[list[int], Any]]) -> dict[int, str]:
        errors: dict[int, str] = {}
        if not futures:
            return errors
        # Stay well inside the claim lease, so no other relay re-claims these rows.
        timeout = max(1.0, self.rt.settings.claim_lease * 0.8)
        _, late = await asyncio.wait([f for _, f in futures], timeout=timeout)
        for ids, fut in futures:
            if fut in late:
                fut.cancel()
                reason = f"publish to {self.topic} failed: no ack in {timeout:g}s"
            elif (failure := fut.exception()) is not None:
                reason = f"publish to {self.topic} failed: {type(failure).__name__}: {failure}"
            else:
                continue
            errors.update(dict.fromkeys(ids, reason))
        return errors

    async def tick(self) -> None:
        """Called by the Faust timer every ``relay_interval``: goes again at once while
        rows keep coming (a full batch, or new rows committed during the round), and
        polls less often (up to ``relay_idle_interval``) while there is nothing to do."""
        rt = self.rt
        if not rt.ready.is_set() or time.monotonic() < self._next_poll:
            return
        if not self._announced:
            self._announced = True
            log.info(
                "relay %s started: table %s -> topic %s, batch %d, lease %.0fs",
                self.service,
                self.store.route.table,
                self.topic,
                rt.settings.relay_batch,
                rt.settings.claim_lease,
            )
        claimed = 0
        settling: deque[Awaitable[None]] = deque()
        try:
            try:
                while True:
                    n, round_settling = await self._start_round()
                    claimed += n
                    if round_settling is not None:
                        settling.append(round_settling)
                    if n == 0:
                        break
                    if len(settling) >= MAX_ROUNDS_IN_FLIGHT:
                        await settling.popleft()
            finally:
                # Every round settles before the tick ends, even when one failed.
                results = await asyncio.gather(*settling, return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException):
                    raise result
            if self._failing:
                self._failing = False
                log.info("relay %s: recovered", self.service)
        except Exception as exc:  # noqa: BLE001 - the timer must survive anything
            # The rows stay in the database: a later round publishes them.
            if not self._failing:
                log.warning("relay %s: round failed: %s: %s", self.service, type(exc).__name__, exc)
            self._failing = True
        s = rt.settings
        if claimed:
            self._pause = 0.0
        else:
            self._pause = min(max(self._pause * 2, s.relay_interval), s.relay_idle_interval)
        self._next_poll = time.monotonic() + self._pause
