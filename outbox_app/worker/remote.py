"""Remote work (a handler's ``after_commit``), run after its batch committed; its row is
consumed only when it succeeded, and a failure is a failed attempt."""

from __future__ import annotations

import asyncio
import logging

from outbox_app.handling import BatchOutcome
from outbox_app.store import OutboxStore
from outbox_app.worker.runtime import Runtime, until_the_database_answers

log = logging.getLogger(__name__)

REMOTE_TIMEOUT_S = 30.0


async def run_remote_work(rt: Runtime, store: OutboxStore, outcome: BatchOutcome) -> None:
    service = store.route.service
    work = outcome.remote
    results = await asyncio.gather(
        *(
            asyncio.wait_for(w.spec.after_commit(w.event, w.result), REMOTE_TIMEOUT_S)  # type: ignore[misc]
            for w in work
        ),
        return_exceptions=True,
    )
    # Whatever the remote work returned, it succeeded unless it raised.
    ok = [
        w.event.outbox_id
        for w, r in zip(work, results, strict=True)
        if not isinstance(r, BaseException)
    ]
    failed = {
        w.event.outbox_id: f"remote work failed: {type(r).__name__}: {r}"
        for w, r in zip(work, results, strict=True)
        if isinstance(r, BaseException)
    }
    for row_id, reason in failed.items():
        log.warning("consumer %s: outbox id %d: %s", service, row_id, reason)
    what = f"consumer {service}: marking remote work"
    if ok:
        # On an ordered service a row with remote work held back its key's later rows
        # (parked behind it): finishing it releases them, in the same transaction.
        done = set(ok)
        keys = [w.event.key for w in work if w.event.outbox_id in done and w.event.key]
        release = keys if store.route.ordered else []
        await until_the_database_answers(
            rt, what, store.mark_consumed, ok, counted=outcome.counted, release=release
        )
        outcome.consumed.extend(ok)
    if failed:
        res = await until_the_database_answers(
            rt, what, store.record_failures, failed, counted=outcome.counted
        )
        outcome.failed.update({i: failed[i] for i in res.retried})
        outcome.dead.update({i: failed[i] for i in res.dead})
