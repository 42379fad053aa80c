"""The consume path of one batch, in process, on MariaDB and SQLite (no broker)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import BigInteger, Column, Integer, MetaData, String, Table, func, select
from sqlalchemy.orm import Session

from outbox_app import Event, HandlerContext, PermanentFailure, Registry, Status, publish
from outbox_app.clock import db_now
from outbox_app.envelope import Envelope, decode, encode
from outbox_app.handling import BatchHandling
from outbox_app.redelivery import Redeliveries
from outbox_app.settings import Settings
from outbox_app.worker.runtime import Runtime

metadata = MetaData()
effects = Table(
    "consumer_effects",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("outbox_id", BigInteger, nullable=False),
    Column("note", String(32), nullable=False),
)


def build_registry() -> Registry:
    reg = Registry()
    reg.add_metadata(metadata)

    @reg.handler("svc.ok", service="svc")
    def ok(ctx: HandlerContext) -> None:
        ctx.insert(effects, outbox_id=ctx.event.outbox_id, note="ok")

    @reg.handler("svc.fail", service="svc")
    def fail(ctx: HandlerContext) -> None:
        ctx.insert(effects, outbox_id=ctx.event.outbox_id, note="must not stay")
        raise ValueError(f"cannot handle {ctx.payload}")

    @reg.handler("svc.permanent", service="svc")
    def permanent(ctx: HandlerContext) -> None:
        raise PermanentFailure("the referenced account was deleted")

    @reg.handler("svc.chain", service="svc")
    def chain(ctx: HandlerContext) -> None:
        ctx.session.execute(effects.insert().values(outbox_id=ctx.event.outbox_id, note="chain"))
        ctx.publish("svc.ok", {"from": ctx.event.outbox_id}, key=ctx.event.key)

    reg.register_event("svc.retired", "svc")  # no handler any more
    return reg


@pytest.fixture
def runtime(db_url: str) -> Iterator[Runtime]:
    reg = build_registry()
    settings = Settings(database_url=db_url, backoff_jitter=0.0, handler_modules=())
    rt = Runtime(settings, reg, ["svc"])
    asyncio.run(rt.start())
    try:
        yield rt
    finally:
        rt.close()


def publish_rows(rt: Runtime, events: list[tuple[str, dict[str, object]]]) -> list[int]:
    with Session(rt.engine) as session, session.begin():
        return [publish(session, et, p, key="k", registry=rt.registry) for et, p in events]


def envelopes(rt: Runtime, ids: list[int]) -> list[Envelope]:
    store = rt.stores["svc"]
    rows = [store.get(i) for i in ids]
    return [decode(encode(r)[1], "svc") for r in rows if r is not None]


def effect_notes(rt: Runtime) -> list[tuple[int, str]]:
    with rt.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(select(effects.c.outbox_id, effects.c.note))]


def handling(rt: Runtime) -> BatchHandling:
    return BatchHandling(rt.stores["svc"], rt.registry)


def test_one_failing_handler_does_not_undo_the_others(runtime: Runtime) -> None:
    ids = publish_rows(
        runtime,
        [("svc.ok", {}), ("svc.fail", {"n": 1}), ("svc.ok", {}), ("svc.permanent", {})],
    )
    ok1, failing, ok2, permanent = ids
    out = handling(runtime).run(envelopes(runtime, ids))
    assert sorted(out.consumed) == [ok1, ok2]
    assert list(out.failed) == [failing] and "ValueError: cannot handle" in out.failed[failing]
    assert list(out.dead) == [permanent]
    store = runtime.stores["svc"]
    assert [store.get(i).status for i in ids] == [  # type: ignore[union-attr]
        Status.CONSUMED,
        Status.PENDING,
        Status.CONSUMED,
        Status.DEAD,
    ]
    row = store.get(failing)
    assert row is not None and row.retry_count == 1 and row.last_error is not None
    dead = store.get(permanent)
    assert dead is not None and dead.last_error == (
        "permanent failure: the referenced account was deleted"
    )
    assert sorted(effect_notes(runtime)) == [(ok1, "ok"), (ok2, "ok")]


def test_duplicates_and_unknown_ids_are_skipped(runtime: Runtime) -> None:
    (row_id,) = publish_rows(runtime, [("svc.ok", {})])
    envs = envelopes(runtime, [row_id])
    c = handling(runtime)
    first = c.run(envs + envs)  # the same envelope twice in one batch
    assert first.consumed == [row_id] and first.duplicates == [row_id]
    again = c.run(envs)  # redelivered after the commit
    assert again.consumed == [] and again.duplicates == [row_id]
    ghost = Envelope(987_654, "svc.ok", "svc", None, 1)
    assert c.run([ghost]).unknown_ids == [987_654]
    assert effect_notes(runtime) == [(row_id, "ok")]


def test_unknown_event_type_and_bad_payload_go_dead(runtime: Runtime) -> None:
    store = runtime.stores["svc"]
    with runtime.engine.begin() as conn:
        retired = store.add(
            conn, event_type="svc.retired", payload_json="{}", key=None, max_retry=5
        )
        broken = store.add(
            conn, event_type="svc.ok", payload_json="{not json", key=None, max_retry=5
        )
    out = handling(runtime).run(envelopes(runtime, [retired, broken]))
    assert out.dead[retired] == "unknown event type 'svc.retired' for service 'svc'"
    assert out.dead[broken].startswith("undecodable payload")
    assert store.get(retired).status is Status.DEAD  # type: ignore[union-attr]


def test_a_handler_publishes_further_events_atomically(runtime: Runtime) -> None:
    (chain,) = publish_rows(runtime, [("svc.chain", {})])
    out = handling(runtime).run(envelopes(runtime, [chain]))
    assert out.consumed == [chain]
    store = runtime.stores["svc"]
    claim = store.claim_due(10, 30)
    assert claim is not None and [r.event_type for r in claim.rows] == ["svc.ok"]
    assert claim.rows[0].traceparent is not None
    parent = store.get(chain)
    assert parent is not None and parent.traceparent is not None
    assert claim.rows[0].traceparent[3:35] == parent.traceparent[3:35]  # same trace id


def test_failed_child_publish_rolls_back_with_its_handler(runtime: Runtime) -> None:
    reg = runtime.registry

    @reg.handler("svc.badchain", service="svc")
    def bad(ctx: HandlerContext) -> None:
        ctx.publish("svc.ok", {"ok": True})
        ctx.publish("nobody.owns.this", {})

    (row_id,) = publish_rows(runtime, [("svc.badchain", {})])
    out = handling(runtime).run(envelopes(runtime, [row_id]))
    # No retry can register the event type: the row is dead at once, with the reason.
    assert row_id in out.dead and "unknown event type 'nobody.owns.this'" in out.dead[row_id]
    with runtime.engine.connect() as conn:
        table = runtime.stores["svc"].table
        count = conn.execute(select(func.count()).select_from(table)).scalar_one()
    assert count == 1  # the first child was rolled back with the savepoint


@pytest.mark.parametrize("misuse", ["commit", "rollback", "close"])
def test_a_handler_that_commits_rolls_back_or_closes_its_session_is_refused(
    runtime: Runtime, misuse: str
) -> None:
    """The consumer commits a handler's writes with its outbox row; a handler's own commit
    (or rollback) would break that. It raises, the row goes dead with the reason, and that
    handler's writes are undone while the others' stay."""
    reg = runtime.registry

    @reg.handler(f"svc.{misuse}", service="svc")
    def misbehaves(ctx: HandlerContext) -> None:
        ctx.session.execute(effects.insert().values(outbox_id=ctx.event.outbox_id, note="undone"))
        getattr(ctx.session, misuse)()
        ctx.session.execute(effects.insert().values(outbox_id=ctx.event.outbox_id, note="after"))

    ok1, bad, ok2 = publish_rows(runtime, [("svc.ok", {}), (f"svc.{misuse}", {}), ("svc.ok", {})])
    out = handling(runtime).run(envelopes(runtime, [ok1, bad, ok2]))
    assert sorted(out.consumed) == [ok1, ok2]
    assert (
        f"must not {misuse if misuse != 'rollback' else 'roll back'} ctx.session" in out.dead[bad]
    )
    assert sorted(effect_notes(runtime)) == [(ok1, "ok"), (ok2, "ok")]
    row = runtime.stores["svc"].get(bad)
    assert row is not None and row.status is Status.DEAD


def test_a_deadlock_victim_batch_runs_again_at_once(
    runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    from sqlalchemy.exc import OperationalError

    ids = publish_rows(runtime, [("svc.ok", {}), ("svc.ok", {})])
    from outbox_app.worker.consumer import ServiceConsumer

    c = ServiceConsumer(runtime, "svc")
    real, calls = c.handling.run, []

    def deadlocked_once(envs: list[Envelope]):  # type: ignore[no-untyped-def]
        calls.append(len(envs))
        if len(calls) == 1:
            # What mysqlclient raises when InnoDB picks this transaction as the victim.
            raise OperationalError("SELECT ...", {}, Exception(1213, "Deadlock found"))
        return real(envs)

    c.handling.run = deadlocked_once  # type: ignore[method-assign]
    with caplog.at_level("WARNING", logger="outbox_app.worker.consumer"):
        out = asyncio.run(c.handle([encode(runtime.stores["svc"].get(i))[1] for i in ids]))  # type: ignore[arg-type]
    assert calls == [2, 2] and sorted(out.consumed) == ids
    assert not [r for r in caplog.records if "rolled back" in r.getMessage()]  # no 0.2 s wait


def test_remote_work_that_returns_a_value_still_consumes_its_row(runtime: Runtime) -> None:
    """Only an exception fails remote work: a value returned (a response, a message id)
    must not leave the row neither consumed nor failed."""
    from outbox_app.worker.consumer import ServiceConsumer

    reg = runtime.registry
    delivered: list[int] = []

    async def send(event: Event, result: object) -> str:
        delivered.append(event.outbox_id)
        return "202 Accepted"

    @reg.handler("svc.remote", service="svc", after_commit=send)
    def record(ctx: HandlerContext) -> dict[str, int]:
        return {"id": ctx.event.outbox_id}

    (row_id,) = publish_rows(runtime, [("svc.remote", {})])
    c = ServiceConsumer(runtime, "svc")
    out = asyncio.run(c.handle([encode(runtime.stores["svc"].get(row_id))[1]]))  # type: ignore[arg-type]
    assert out.consumed == [row_id] and delivered == [row_id]
    row = runtime.stores["svc"].get(row_id)
    assert row is not None and row.status is Status.CONSUMED


def test_a_backlog_created_after_the_assignment_runs_without_counting_starts(
    runtime: Runtime,
) -> None:
    """However old its events: a consumer that fell behind pays no extra commit."""
    ids = publish_rows(runtime, [("svc.ok", {}), ("svc.fail", {"n": 1})])
    store = runtime.stores["svc"]
    now = db_now(runtime.engine)
    with runtime.engine.begin() as conn:  # an hour old: the consumer fell that far behind
        conn.execute(
            store.table.update()
            .where(store.table.c.id.in_(ids))
            .values(created_at=now - timedelta(hours=1))
        )
    redeliveries = Redeliveries(0.0)
    redeliveries.assigned(now - timedelta(hours=2))
    out = BatchHandling(store, runtime.registry, redeliveries).run(envelopes(runtime, ids))
    assert out.counted == set()
    assert out.consumed == [ids[0]] and list(out.failed) == [ids[1]]
    failed = store.get(ids[1])
    assert failed is not None and failed.retry_count == 1 and failed.status is Status.PENDING


def test_rows_created_before_the_assignment_count_their_start_once(runtime: Runtime) -> None:
    """They may have been delivered to a worker that died while handling them."""
    ids = publish_rows(runtime, [("svc.ok", {}), ("svc.fail", {"n": 1})])
    store = runtime.stores["svc"]
    redeliveries = Redeliveries(0.0)
    redeliveries.assigned(db_now(runtime.engine) + timedelta(seconds=1))
    out = BatchHandling(store, runtime.registry, redeliveries).run(envelopes(runtime, ids))
    assert out.counted == set(ids)
    assert out.consumed == [ids[0]] and list(out.failed) == [ids[1]]
    ok, failed = store.get(ids[0]), store.get(ids[1])
    assert ok is not None and ok.status is Status.CONSUMED and ok.retry_count == 0
    assert failed is not None and failed.retry_count == 1  # counted at its start, not again
    assert effect_notes(runtime) == [(ids[0], "ok")]
