"""The relay: claim due rows, publish them with their keys, wait for the acks, mark them
published in bulk. Nothing else: no business logic, no schema work.

What a failed send means depends on why it failed. A record the broker refuses for what
it is (too large, corrupt) will be refused again: that is the event's failed attempt. Any
other failure (broker down or timing out, no leader, a topic that is gone) is the
infrastructure's: the claimed rows are given back at once with no attempt spent, and the
relay pauses with backoff, says so once, and says when it resumes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiokafka.errors import (
    CorruptRecordException,
    InvalidTimestampError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
)

from outbox_app.envelope import encode
from outbox_app.errors import short_error
from outbox_app.records import Delivery
from outbox_app.retry import Backoff
from outbox_app.store import Claim, Marks
from outbox_app.worker.producer import PublishFunc, RecordRefused
from outbox_app.worker.runtime import Runtime

log = logging.getLogger(__name__)

# Rounds whose acks and marking may still be outstanding while the next round claims,
# in this tick or the next: a tick that waited for its last round's acks and mark made
# the poll period the round's whole life plus the interval (26 ms at 500 events/s), and
# a row committed meanwhile waited half of that.
MAX_ROUNDS_IN_FLIGHT = 3
# How long a stopping worker waits for the acks and marks of its last rounds.
STOP_SETTLE_SECONDS = 5.0

# Refusals of the record itself: sending it again cannot help, so they are its attempts.
REFUSED_RECORDS = (
    RecordRefused,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
    CorruptRecordException,
    InvalidTimestampError,
)


class BrokerTrouble(Exception):
    """A round could not be delivered for reasons of the broker's: its rows were given back."""


@dataclass
class Acks:
    refused: dict[int, str] = field(default_factory=dict)  # the record's own fault
    unsent: dict[int, str] = field(default_factory=dict)  # the infrastructure's


class Relay:
    def __init__(self, runtime: Runtime, service: str, publish: PublishFunc) -> None:
        self.rt = runtime
        self.service = service
        self.store = runtime.stores[service]
        self.topic = runtime.topics[service]
        self.publish = publish
        self._announced = False
        self._pause = 0.0  # current idle back-off, between the two relay intervals
        self._next_poll = 0.0
        self._backoff = Backoff(0.5, 10.0)  # while the broker or the database is down
        self._paused_since: float | None = None
        self._woken = False
        self._settling: deque[asyncio.Future[None]] = deque()  # oldest round first
        # Acked rows not yet marked published: the next claim's transaction marks them.
        self._acked: list[Marks] = []
        runtime.relays[service] = self
        runtime.on_stop.append(self._stop)

    def wake(self) -> None:
        """Poll at the next tick (new rows were committed by this process); a relay
        paused by an outage keeps its backoff. A wake during a round counts too: that
        round's claim may have run before the commit."""
        self._woken = True
        if self._paused_since is None:
            self._pause = 0.0
            self._next_poll = 0.0

    async def run_once(self) -> int:
        """One complete round: returns how many rows were claimed (published or not)."""
        claimed, settling = await self._start_round()
        try:
            if settling is not None:
                await settling
        finally:
            await self._mark_acked()  # what the broker took, even when some it did not
        return claimed

    async def _start_round(self) -> tuple[int, asyncio.Future[None] | None]:
        """Claim and send; the acks settle in the returned task, so the next round's
        claim overlaps them. Sends are issued round after round, so rows of a key
        still reach its partition in claim order."""
        s = self.rt.settings
        marks, self._acked = self._acked, []
        try:
            claim = await self.rt.executor.run(
                self.store.claim_due, s.relay_batch, s.claim_lease, marks
            )
        except BaseException:
            self._acked[:0] = marks  # rolled back with the claim: the next one marks them
            raise
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
        acks = await self._wait_acks(sent)
        failed = acks.refused.keys() | acks.unsent.keys()
        ok = [r.id for r in claim.rows if r.id not in failed]
        if ok:
            # Marked by the next claim's transaction: until then the rows stay leased,
            # hidden from every relay, and the consumer takes pending rows as well.
            self._acked.append((ok, claim.token))
        m = self.rt.metrics
        m.relay_batch.labels(self.service).observe(len(claim.rows))
        m.published.labels(self.service).inc(len(ok))
        if ok:
            m.publish_latency.labels(self.service).observe(time.monotonic() - started)
        if acks.refused:
            outcome = await self.rt.executor.run(
                self.store.record_failures, acks.refused, token=claim.token
            )
            m.publish_failures.labels(self.service).inc(len(acks.refused))
            m.dead.labels(self.service).inc(len(outcome.dead))
            first_id, first = next(iter(acks.refused.items()))
            log.warning(
                "relay %s: the broker refused %d record(s) of %d (%d will retry, %d dead); "
                "first: outbox id %d: %s",
                self.service,
                len(acks.refused),
                len(claim.rows),
                len(outcome.retried),
                len(outcome.dead),
                first_id,
                first,
            )
        if acks.unsent:
            await self.rt.executor.run(self.store.release_claim, list(acks.unsent), claim.token)
            raise BrokerTrouble(next(iter(acks.unsent.values())))

    async def _send_all(self, rows: list[Delivery]) -> list[tuple[list[int], Any]]:
        """Hand the round to the producer: (row ids, ack future) per batch."""
        sent = await self.publish(self.topic, [encode(row) for row in rows])
        return [([rows[i].id for i in indices], future) for indices, future in sent]

    async def _wait_acks(self, futures: list[tuple[list[int], Any]]) -> Acks:
        acks = Acks()
        if not futures:
            return acks
        # Stay well inside the claim lease, so no other relay re-claims these rows.
        timeout = max(1.0, self.rt.settings.claim_lease * 0.8)
        _, late = await asyncio.wait([f for _, f in futures], timeout=timeout)
        for ids, fut in futures:
            if fut in late:
                fut.cancel()
                acks.unsent.update(dict.fromkeys(ids, f"no ack from the broker in {timeout:g}s"))
            elif (failure := fut.exception()) is not None:
                reason = f"publish to {self.topic} failed: {short_error(failure)}"
                target = acks.refused if isinstance(failure, REFUSED_RECORDS) else acks.unsent
                target.update(dict.fromkeys(ids, reason))
        return acks

    async def tick(self) -> None:
        """Called by the Faust timer every ``relay_interval``: goes again at once while
        rows keep coming (a full batch, or new rows committed during the round), and
        polls less often (up to ``relay_idle_interval``) while there is nothing to do;
        pauses with backoff while the broker or the database is down."""
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
        self._woken = False
        try:
            claimed = await self._rounds()
        except Exception as exc:  # noqa: BLE001 - the timer must survive anything
            self._paused(exc)
            return
        self._resumed()
        s = rt.settings
        if claimed or self._woken:
            self._pause = 0.0
        else:
            self._pause = min(max(self._pause * 2, s.relay_interval), s.relay_idle_interval)
        self._next_poll = time.monotonic() + self._pause

    async def _rounds(self) -> int:
        """Rounds back to back while claims come back full. A claim that was not full
        took every due row: claiming again at once would find nothing, or the one row
        committed meanwhile, at the cost of a transaction per row under a light load;
        the next tick claims what came.

        The last rounds' acks and marks may still be outstanding when this returns: the
        next tick raises the first failure among them (and pauses). While paused, every
        round settles before this returns, so the relay resumes only on acks."""
        batch = self.rt.settings.relay_batch
        claimed = 0
        try:
            self._raise_settled()
            while True:
                while len(self._settling) >= MAX_ROUNDS_IN_FLIGHT:
                    await self._settling[0]
                    self._raise_settled()
                n, settling = await self._start_round()
                claimed += n
                if settling is not None:
                    self._settling.append(settling)
                if n < batch:
                    break
        except Exception:
            await self.settle_all(raise_first=False)
            raise
        if self._paused_since is not None:
            await self.settle_all()
        return claimed

    def _raise_settled(self) -> None:
        """Forget the rounds that settled; raise the first failure among them."""
        failure: BaseException | None = None
        while self._settling and self._settling[0].done():
            done = self._settling.popleft()
            exc = None if done.cancelled() else done.exception()
            if exc is not None and failure is None:
                failure = exc
        if failure is not None:
            raise failure

    async def settle_all(self, raise_first: bool = True) -> None:
        """Wait for every outstanding round and mark its acked rows published; raise
        the first failure among them."""
        pending, self._settling = list(self._settling), deque()
        results = await asyncio.gather(*pending, return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        try:
            await self._mark_acked()
        except Exception as exc:  # noqa: BLE001 - kept for the next claim
            failures.append(exc)
        if failures and raise_first:
            raise failures[0]

    async def _mark_acked(self) -> None:
        """Mark the acked rows published now, without waiting for the next claim."""
        marks, self._acked = self._acked, []
        for i, (ids, token) in enumerate(marks):
            try:
                await self.rt.executor.run(self.store.mark_published, ids, token)
            except BaseException:
                self._acked[:0] = marks[i:]
                raise

    async def _stop(self) -> None:
        """The worker is stopping: the rounds sent get their acks and marks for a few
        seconds (a row left leased is published again once its lease ends: the consumer
        then sees a duplicate)."""
        pending, self._settling = list(self._settling), deque()
        unsettled = 0
        if pending:
            done, late = await asyncio.wait(pending, timeout=STOP_SETTLE_SECONDS)
            for future in late:
                future.cancel()
            unsettled = len(late) + sum(1 for f in done if f.cancelled() or f.exception())
        try:
            await self._mark_acked()
        except Exception as exc:  # noqa: BLE001 - stopping anyway
            log.info(
                "relay %s: acked rows left unmarked at stop: %s", self.service, short_error(exc)
            )
        if unsettled:
            log.info(
                "relay %s: stopped with %d round(s) unsettled; their rows are published "
                "again when their lease ends",
                self.service,
                unsettled,
            )

    def _paused(self, exc: BaseException) -> None:
        """The rows stay in the database (given back when the broker failed them): a later
        round publishes them. No attempt is spent on an outage."""
        broker = isinstance(exc, BrokerTrouble)
        dependency = self.rt.health.broker if broker else self.rt.health.database
        reason = str(exc) if broker else short_error(exc)
        delay = self._backoff.next()
        self._next_poll = time.monotonic() + delay
        self.rt.metrics.relay_paused.labels(self.service).set(1)
        first = self._paused_since is None
        if first:
            self._paused_since = time.monotonic()
        if dependency.failed(reason) or first:
            log.warning(
                "relay %s: paused, %s unavailable (%s); no attempts spent%s; retrying with "
                "backoff (up to %.0fs)",
                self.service,
                dependency.name,
                reason,
                ", rows given back" if broker else "",
                self._backoff.cap,
            )

    def _resumed(self) -> None:
        self._backoff.reset()
        if self._paused_since is None:
            return
        lasted = time.monotonic() - self._paused_since
        self._paused_since = None
        self.rt.metrics.relay_paused.labels(self.service).set(0)
        for dependency in self.rt.health.dependencies():
            dependency.answered()
        log.info("relay %s: resumed after %.1fs", self.service, lasted)
