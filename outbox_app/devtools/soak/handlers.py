"""Handlers of the soak's own service ``soak`` (see ``outbox_app.devtools.soak``), kept out of the
business ``handlers`` package. Soak workers load them with
``OUTBOX_HANDLER_MODULES=handlers,outbox_app.devtools.soak.handlers``.

- ``soak.flaky`` writes one ``soak_effects`` row and then fails at random with the
  probability in ``SOAK_HANDLER_FAILURE_RATE``: the failed attempt's write must roll
  back, and a later attempt must apply it exactly once.
- ``soak.doomed`` writes a row and always fails: it must end ``dead`` with no effect.
- ``soak.step`` (service ``soak_seq``, ordered per key): one step of a stream (the key),
  recorded in ``soak_steps`` in the order the steps' effects commit; it fails at random
  like ``soak.flaky``, and a doomed step always fails (the soak skips it once dead, as an
  operator would). A stream's effects must commit in the order its steps did.

``soak_orders`` is the producer's business table: one row per business transaction,
committed or rolled back with its outbox rows.
"""

from __future__ import annotations

import logging
import os
import random
import time

from sqlalchemy import BigInteger, Column, Integer, MetaData, String, Table, insert

from outbox_app.clock import utcnow
from outbox_app.context import HandlerContext
from outbox_app.registry import default_registry, handler
from outbox_app.schema import Id, Timestamp

FAILURE_RATE_ENV = "SOAK_HANDLER_FAILURE_RATE"
FAILURE_UNTIL_ENV = "SOAK_HANDLER_FAILURE_UNTIL"
INJECTED = "soak: injected handler failure"

log = logging.getLogger(__name__)

metadata = default_registry.add_metadata(MetaData())

soak_effects = Table(
    "soak_effects",
    metadata,
    Column("id", Id, primary_key=True),
    Column("outbox_id", BigInteger, nullable=False, index=True),
    Column("event_type", String(64), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("created_at", Timestamp, nullable=False),
)

# The soak's ordered service: its steps' effects must commit in each stream's order.
default_registry.add_service("soak_seq", ordering="key")

soak_steps = Table(
    "soak_steps",
    metadata,
    Column("id", Id, primary_key=True),  # the commit order of the effects
    Column("outbox_id", BigInteger, nullable=False, index=True),
    Column("stream", String(64), nullable=False),
    Column("seq", Integer, nullable=False),
)

soak_orders = Table(
    "soak_orders",
    metadata,
    Column("id", Id, primary_key=True),
    Column("uid", String(64), nullable=False, unique=True),
    Column("events", Integer, nullable=False),
    Column("created_at", Timestamp, nullable=False),
)


def failure_rate() -> float:
    """The chance that an attempt fails, until the wall-clock time in
    ``SOAK_HANDLER_FAILURE_UNTIL`` (when set): the soak's fault window."""
    try:
        until = float(os.environ.get(FAILURE_UNTIL_ENV, "0") or 0)
        if until and time.time() >= until:
            return 0.0
        return min(1.0, max(0.0, float(os.environ.get(FAILURE_RATE_ENV, "0") or 0)))
    except ValueError:
        return 0.0


class InjectedFailure(RuntimeError):
    """A failure the soak asked for."""


def _effect(ctx: HandlerContext) -> None:
    ctx.session.execute(
        insert(soak_effects).values(
            outbox_id=ctx.event.outbox_id,
            event_type=ctx.event.event_type,
            attempt=ctx.event.attempt,
            created_at=utcnow(),
        )
    )


def _decide(outbox_id: int, attempt: int, rate: float) -> bool:
    # Decided per (row, attempt): the consumer may run a batch twice (without and then
    # with savepoints), and both runs of one attempt must agree.
    return random.Random(outbox_id * 1000 + attempt).random() < rate


@handler("soak.flaky", service="soak")
def flaky(ctx: HandlerContext) -> None:
    _effect(ctx)  # written first, so a failure must roll it back
    if _decide(ctx.event.outbox_id, ctx.event.attempt, failure_rate()):
        # The soak counts distinct (outbox id, attempt) pairs of this line in worker logs.
        log.warning("%s outbox_id=%d attempt=%d", INJECTED, ctx.event.outbox_id, ctx.event.attempt)
        raise InjectedFailure(f"injected failure on attempt {ctx.event.attempt}")


@handler("soak.doomed", service="soak")
def doomed(ctx: HandlerContext) -> None:
    _effect(ctx)
    log.warning("%s outbox_id=%d attempt=%d", INJECTED, ctx.event.outbox_id, ctx.event.attempt)
    raise InjectedFailure("this event is meant to fail until it is dead")


@handler("soak.step", service="soak_seq")
def step(ctx: HandlerContext) -> None:
    ctx.session.execute(
        insert(soak_steps).values(
            outbox_id=ctx.event.outbox_id, stream=ctx.event.key, seq=ctx.payload["seq"]
        )
    )
    doomed = bool(ctx.payload.get("doomed"))
    if doomed or _decide(ctx.event.outbox_id, ctx.event.attempt, failure_rate()):
        log.warning("%s outbox_id=%d attempt=%d", INJECTED, ctx.event.outbox_id, ctx.event.attempt)
        raise InjectedFailure(f"injected failure of step {ctx.payload['seq']}")
