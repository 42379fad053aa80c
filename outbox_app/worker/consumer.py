"""The consumer agent of one service: the Faust agent body, its acks, and the retries of
a batch whose transaction could not run (the database went away). The batches of the
service's partition actors share transactions (``group_commit``)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

from outbox_app.envelope import BadEnvelope, Envelope, decode
from outbox_app.handling import BatchHandling, BatchOutcome
from outbox_app.worker.batching import run_batches
from outbox_app.worker.group_commit import GroupCommit
from outbox_app.worker.remote import run_remote_work
from outbox_app.worker.runtime import Runtime, until_the_database_answers

log = logging.getLogger(__name__)

# Transactions of one service running at once. Under a backlog a second one overlaps the
# first one's round trips: 12-16 % more drain in paired bench runs (group_commit.py starts
# it only for a full group, so a light load still shares one transaction).
TRANSACTIONS_IN_FLIGHT = 2


class ServiceConsumer:
    def __init__(self, runtime: Runtime, service: str) -> None:
        self.rt = runtime
        self.service = service
        self.store = runtime.stores[service]
        self.handling = BatchHandling(self.store, runtime.registry, runtime.redeliveries)
        self._announced = False
        self.group = GroupCommit(
            self.handle, runtime.settings.consumer_batch, TRANSACTIONS_IN_FLIGHT
        )
        runtime.on_stop.append(self.group.close)

    async def agent(self, stream: AsyncIterator[Any]) -> None:
        """The Faust agent body for this service's topic."""
        s = self.rt.settings
        await self.rt.ready.wait()
        if not self._announced:
            self._announced = True
            log.info(
                "consumer %s started: topic %s -> table %s, batch %d",
                self.service,
                self.rt.topics[self.service],
                self.store.route.table,
                s.consumer_batch,
            )
        # Acks are ours: an offset moves on only after its batch was handled.
        events = stream.noack()  # type: ignore[attr-defined]

        async def handle_events(batch: list[Any]) -> None:
            await self.group.submit([event.value for event in batch])
            for event in batch:
                await events.ack(event)

        try:
            await run_batches(events.events(), handle_events, s.consumer_batch)
        except asyncio.CancelledError:
            # A revoked partition (or the worker stopping) cancels its actor: a normal end.
            # Re-raising it would make Faust log the actor as crashed, with a traceback,
            # and restart it for a partition this worker no longer owns.
            log.debug("consumer %s: partition actor stopped", self.service)

    async def handle(self, values: list[Any]) -> BatchOutcome:
        """Handle one batch of raw records; never raises for bad records or handlers."""
        envelopes: list[Envelope] = []
        poison = 0
        for value in values:
            try:
                envelopes.append(decode(value, self.service))
            except BadEnvelope as exc:
                poison += 1
                log.warning(
                    "consumer %s: dropped a record that is not an outbox envelope: %s",
                    self.service,
                    exc,
                )
        outcome = await self._run_with_retry(envelopes) if envelopes else BatchOutcome()
        outcome.poison = poison
        self.rt.wake_relays(outcome.published_to)  # committed: follow-ups go out now
        if outcome.remote:
            await run_remote_work(self.rt, self.store, outcome)
        self._observe(outcome)
        return outcome

    async def _run_with_retry(self, envelopes: list[Envelope]) -> BatchOutcome:
        return await until_the_database_answers(
            self.rt,
            f"consumer {self.service}: batch of {len(envelopes)}",
            self.handling.run,
            envelopes,
        )

    def _observe(self, out: BatchOutcome) -> None:
        m, s = self.rt.metrics, self.service
        m.consumed.labels(s).inc(len(out.consumed))
        m.handler_failures.labels(s).inc(len(out.failed) + len(out.dead))
        m.dead.labels(s).inc(len(out.dead))
        m.duplicates.labels(s).inc(len(out.duplicates))
        m.parked.labels(s).inc(len(out.parked))
        m.poison.labels(s).inc(out.poison + len(out.unknown_ids))
        m.recent_end_to_end.add(s, out.latencies)  # the dashboard's p50/p99 (ops/web/sampler.py)
        hist = m.end_to_end.labels(s)
        for latency in out.latencies:
            hist.observe(latency)
