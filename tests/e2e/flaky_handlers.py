"""Handlers for failure tests: service ``flaky`` (its effects in ``flaky_effects``) and
service ``steps``, ordered per key (``step_effects``). Loaded by test workers through
OUTBOX_HANDLER_MODULES."""

from __future__ import annotations

import os
import random
import signal
import time

from sqlalchemy import BigInteger, Column, Integer, MetaData, String, Table, insert

from outbox_app import HandlerContext, default_registry, handler
from outbox_app.clock import utcnow
from outbox_app.schema import Id, Timestamp

metadata = default_registry.add_metadata(MetaData())

flaky_effects = Table(
    "flaky_effects",
    metadata,
    Column("id", Id, primary_key=True),
    Column("outbox_id", BigInteger, nullable=False),
    Column("event_type", String(64), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("created_at", Timestamp, nullable=False),
)


def _effect(ctx: HandlerContext) -> None:
    ctx.session.execute(
        insert(flaky_effects).values(
            outbox_id=ctx.event.outbox_id,
            event_type=ctx.event.event_type,
            attempt=ctx.event.attempt,
            created_at=utcnow(),
        )
    )


@handler("flaky.ok", service="flaky")
def ok(ctx: HandlerContext) -> None:
    _effect(ctx)


@handler("flaky.twice", service="flaky")
def fails_twice(ctx: HandlerContext) -> None:
    _effect(ctx)  # written, then rolled back with the savepoint on attempts 1 and 2
    if ctx.event.attempt < 3:
        raise RuntimeError(f"transient failure on attempt {ctx.event.attempt}")


@handler("flaky.always", service="flaky")
def always_fails(ctx: HandlerContext) -> None:
    _effect(ctx)
    raise RuntimeError("this handler always fails")


@handler("flaky.crash", service="flaky")
def crashes_its_worker(ctx: HandlerContext) -> None:
    """A poison event: kills the worker process that runs it, every time."""
    _effect(ctx)
    os.kill(os.getpid(), signal.SIGKILL)


@handler("flaky.gated", service="flaky")
def waits_at_its_gate(ctx: HandlerContext) -> None:
    """Holds its batch (and so its partition) while the file named in the payload exists:
    a consumer that falls behind on purpose, for the lag tests. Gives up after two
    minutes so a failed test cannot hang its worker."""
    gate = ctx.payload["gate"]
    for _ in range(2400):
        if not os.path.exists(gate):
            break
        time.sleep(0.05)
    _effect(ctx)


# -- service ``steps``: ordered per key ------------------------------------------------------
default_registry.add_service("steps", ordering="key")

step_effects = Table(
    "step_effects",
    metadata,
    Column("id", Id, primary_key=True),  # the commit order of the effects
    Column("outbox_id", BigInteger, nullable=False),
    Column("stream", String(64), nullable=False),
    Column("seq", Integer, nullable=False),
)


@handler("steps.step", service="steps")
def step(ctx: HandlerContext) -> None:
    """Records (stream, seq) in commit order; fails the attempts its payload asks for
    (``fail``: this share of attempts, decided per outbox id and attempt; ``fail_attempts``:
    the first n)."""
    if ctx.event.attempt <= int(ctx.payload.get("fail_attempts", 0)):
        raise RuntimeError(f"step {ctx.payload['seq']} fails attempt {ctx.event.attempt}")
    share = float(ctx.payload.get("fail", 0))
    if share and random.Random(ctx.event.outbox_id * 1000 + ctx.event.attempt).random() < share:
        raise RuntimeError(f"step {ctx.payload['seq']} fails attempt {ctx.event.attempt}")
    ctx.session.execute(
        insert(step_effects).values(
            outbox_id=ctx.event.outbox_id, stream=ctx.event.key, seq=ctx.payload["seq"]
        )
    )
