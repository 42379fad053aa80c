"""Per-key order of an ordered service, in process on MariaDB and SQLite: the consume
transaction parks a key's later rows behind an unfinished earlier one, releases them when
it finishes, and never delays other keys. Deliveries are made by hand, as the relay and
Kafka would make them, in whatever order a test needs."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import BigInteger, Column, Integer, MetaData, String, Table, select, update
from sqlalchemy.orm import Session

from outbox_app import HandlerContext, PermanentFailure, Registry, Status, publish
from outbox_app.clock import utcnow
from outbox_app.envelope import Envelope, decode, encode
from outbox_app.handling import BatchHandling, BatchOutcome
from outbox_app.ordering import KeyOrder
from outbox_app.schema import Id
from outbox_app.settings import Settings
from outbox_app.worker.runtime import Runtime

metadata = MetaData()
steps = Table(
    "ordering_steps",
    metadata,
    Column("id", Id, primary_key=True),  # commit order of the effects, per key
    Column("outbox_id", BigInteger, nullable=False),
    Column("stream", String(32), nullable=False),
    Column("seq", Integer, nullable=False),
)


def build_registry() -> Registry:
    reg = Registry()
    reg.add_metadata(metadata)
    reg.add_service("ord", ordering="key")

    @reg.handler("ord.step", service="ord")
    def step(ctx: HandlerContext) -> None:
        p = ctx.payload
        if ctx.event.attempt <= p.get("fail_attempts", 0):
            raise RuntimeError(f"attempt {ctx.event.attempt} fails on purpose")
        if p.get("doomed"):
            raise PermanentFailure("this step can never be applied")
        stream = ctx.event.key or "-"
        ctx.insert(steps, outbox_id=ctx.event.outbox_id, stream=stream, seq=p["seq"])

    return reg


@pytest.fixture
def runtime(db_url: str) -> Iterator[Runtime]:
    settings = Settings(database_url=db_url, backoff_jitter=0.0, handler_modules=())
    rt = Runtime(settings, build_registry(), ["ord"])
    asyncio.run(rt.start())
    try:
        yield rt
    finally:
        rt.close()


def publish_steps(rt: Runtime, steps_: list[tuple[str, dict[str, Any]]]) -> list[int]:
    ids = []
    for key, payload in steps_:  # one business transaction each, one after another
        with Session(rt.engine) as session, session.begin():
            ids.append(publish(session, "ord.step", payload, key=key, registry=rt.registry))
    return ids


def deliver(rt: Runtime, ids: list[int]) -> BatchOutcome:
    store = rt.stores["ord"]
    envelopes: list[Envelope] = []
    for i in ids:
        row = store.get(i)
        assert row is not None
        envelopes.append(decode(encode(row)[1], "ord"))
    return BatchHandling(store, rt.registry).run(envelopes)


def due_now(rt: Runtime, *ids: int) -> None:
    t = rt.stores["ord"].table
    with rt.engine.begin() as conn:
        conn.execute(update(t).where(t.c.id.in_(ids)).values(next_retry_at=utcnow()))


def status(rt: Runtime, row_id: int) -> Status:
    row = rt.stores["ord"].get(row_id)
    assert row is not None
    return row.status


def effects(rt: Runtime, stream: str) -> list[int]:
    """The seqs of a stream's effects, in the order they committed."""
    with rt.engine.connect() as conn:
        rows = conn.execute(
            select(steps.c.seq).where(steps.c.stream == stream).order_by(steps.c.id)
        ).all()
    return [r[0] for r in rows]


def relay_round(rt: Runtime) -> list[int]:
    """What the relay would publish now, in its order (claimed, then marked published)."""
    store = rt.stores["ord"]
    claim = store.claim_due(500, 30)
    if claim is None:
        return []
    store.mark_published(claim.ids, claim.token)
    return claim.ids


def test_a_failing_head_holds_back_its_key_only_and_order_is_kept(runtime: Runtime) -> None:
    a = publish_steps(
        runtime,
        [("A", {"seq": 1, "fail_attempts": 2})] + [("A", {"seq": n}) for n in range(2, 7)],
    )
    b = publish_steps(runtime, [("B", {"seq": n}) for n in range(1, 4)])
    out = deliver(runtime, relay_round(runtime))
    assert a[0] in out.failed
    assert out.parked == a[1:]  # the rest of A waits, parked
    assert sorted(out.consumed) == b  # B was not delayed
    assert effects(runtime, "B") == [1, 2, 3] and effects(runtime, "A") == []
    assert [status(runtime, i) for i in a[1:]] == [Status.PARKED] * 5

    due_now(runtime, a[0])
    out = deliver(runtime, relay_round(runtime))  # only the head is due: attempt 2 fails
    assert out.failed.keys() == {a[0]} and out.parked == []
    assert relay_round(runtime) == []  # parked rows are not relayed

    due_now(runtime, a[0])
    out = deliver(runtime, relay_round(runtime))  # attempt 3 succeeds, the key goes on
    assert out.consumed == [a[0]]
    released = relay_round(runtime)
    assert released == a[1:]  # in id order
    out = deliver(runtime, released)
    assert out.consumed == a[1:]
    assert effects(runtime, "A") == [1, 2, 3, 4, 5, 6]


def test_a_later_row_delivered_first_waits_for_the_earlier_one(runtime: Runtime) -> None:
    first, second, third = publish_steps(runtime, [("K", {"seq": n}) for n in (1, 2, 3)])
    relay_round(runtime)
    out = deliver(runtime, [third, second])  # two relays raced; a stale record came first
    assert out.parked == [second, third] and out.consumed == []
    out = deliver(runtime, [first])
    assert out.consumed == [first]
    out = deliver(runtime, relay_round(runtime))
    assert out.consumed == [second, third]
    assert effects(runtime, "K") == [1, 2, 3]


def is_release(sql: str) -> bool:
    """The statement of ``OutboxStore.release_parked`` (parked -> pending, by key)."""
    flat = " ".join(sql.split()).lower()
    return flat.startswith("update") and "message_key in" in flat


def test_a_batch_releases_only_keys_with_parked_rows_outside_it(runtime: Runtime) -> None:
    """A batch runs a release (a round trip) only for keys with parked rows outside it:
    none for a key alone in the batch or followed by rows that are only pending, one
    for a key whose later rows were parked behind the batch's row."""
    from sqlalchemy import event

    first, second, third = publish_steps(runtime, [("K", {"seq": n}) for n in (1, 2, 3)])
    (lone,) = publish_steps(runtime, [("L", {"seq": 1})])
    head, _ = publish_steps(runtime, [("M", {"seq": 1}), ("M", {"seq": 2})])
    relay_round(runtime)
    assert deliver(runtime, [third, second]).parked == [second, third]
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, sql: str, *args: Any) -> None:
        statements.append(sql)

    def releases(ids: list[int]) -> int:
        statements.clear()
        assert deliver(runtime, ids).consumed == ids
        return sum(is_release(s) for s in statements)

    event.listen(runtime.engine, "before_cursor_execute", seen)
    try:
        assert releases([lone]) == 0  # L: nothing elsewhere
        assert releases([head]) == 0  # M: its later row is published, not parked
        assert releases([first]) == 1  # K: two rows parked behind it
    finally:
        event.remove(runtime.engine, "before_cursor_execute", seen)
    assert [status(runtime, i) for i in (second, third)] == [Status.PENDING] * 2
    assert deliver(runtime, relay_round(runtime)).consumed == [second, third]
    assert effects(runtime, "K") == [1, 2, 3] and effects(runtime, "L") == [1]


def test_within_one_batch_a_failure_parks_the_rest_of_its_key(runtime: Runtime) -> None:
    ok, fails, after = publish_steps(
        runtime, [("K", {"seq": 1}), ("K", {"seq": 2, "fail_attempts": 1}), ("K", {"seq": 3})]
    )
    out = deliver(runtime, relay_round(runtime))
    assert out.consumed == [ok] and fails in out.failed and out.parked == [after]
    assert effects(runtime, "K") == [1]


def test_a_dead_head_blocks_until_requeued_and_order_is_kept(runtime: Runtime) -> None:
    head, later = publish_steps(runtime, [("K", {"seq": 1, "fail_attempts": 1}), ("K", {"seq": 2})])
    t = runtime.stores["ord"].table
    with runtime.engine.begin() as conn:
        conn.execute(update(t).where(t.c.id == head).values(max_retry=1))
    out = deliver(runtime, relay_round(runtime))
    assert head in out.dead and out.parked == [later]
    blocked = KeyOrder(runtime.stores["ord"]).blocked()
    assert [(b.key, b.head_id, b.head_status, b.parked) for b in blocked] == [
        ("K", head, Status.DEAD, 1)
    ]
    assert relay_round(runtime) == []  # stays blocked: nothing is published
    assert runtime.stores["ord"].requeue_dead([head]) == [head]
    with runtime.engine.begin() as conn:  # a budget that outlasts its one failing attempt
        conn.execute(update(t).where(t.c.id == head).values(max_retry=2))
    out = deliver(runtime, relay_round(runtime))  # a fresh budget: attempt 1 of it fails
    assert head in out.failed
    due_now(runtime, head)
    out = deliver(runtime, relay_round(runtime))
    assert out.consumed == [head]
    out = deliver(runtime, relay_round(runtime))
    assert out.consumed == [later]
    assert effects(runtime, "K") == [1, 2]


def test_skipping_a_dead_head_lets_its_key_go_on_without_it(runtime: Runtime) -> None:
    doomed, later, last = publish_steps(
        runtime, [("K", {"seq": 1, "doomed": True}), ("K", {"seq": 2}), ("K", {"seq": 3})]
    )
    out = deliver(runtime, relay_round(runtime))
    assert doomed in out.dead and out.parked == [later, last]
    order = KeyOrder(runtime.stores["ord"])
    assert order.skip([later]) == []  # only dead rows can be skipped
    assert order.skip([doomed]) == [doomed]
    assert status(runtime, doomed) is Status.SKIPPED
    out = deliver(runtime, relay_round(runtime))
    assert out.consumed == [later, last]
    assert effects(runtime, "K") == [2, 3]
    assert order.blocked() == []


def test_a_redelivered_dead_row_still_blocks_its_key(runtime: Runtime) -> None:
    doomed, later = publish_steps(runtime, [("K", {"seq": 1, "doomed": True}), ("K", {"seq": 2})])
    deliver(runtime, relay_round(runtime))
    out = deliver(runtime, [doomed, later])  # both again, in one batch (a redelivery)
    assert doomed in out.duplicates and out.parked == [later] and out.consumed == []


def test_parked_rows_waiting_for_nothing_are_released_by_maintenance(runtime: Runtime) -> None:
    head, later = publish_steps(runtime, [("K", {"seq": 1, "fail_attempts": 1}), ("K", {"seq": 2})])
    deliver(runtime, relay_round(runtime))  # head failed, later parked
    store = runtime.stores["ord"]
    store.mark_consumed([head])  # finished behind the consumer's back: no release
    assert status(runtime, later) is Status.PARKED
    assert KeyOrder(store).release_orphans() == 1
    assert status(runtime, later) is Status.PENDING


def set_status(rt: Runtime, state: Status, *ids: int) -> None:
    t = rt.stores["ord"].table
    with rt.engine.begin() as conn:
        conn.execute(update(t).where(t.c.id.in_(ids)).values(status=state.value))


def test_maintenance_releases_only_the_parked_rows_that_wait_for_nothing(
    runtime: Runtime,
) -> None:
    first, second, head, behind = publish_steps(runtime, [("K", {"seq": n}) for n in (1, 2, 3, 4)])
    # The first two wait for nothing; the last waits for a pending head.
    set_status(runtime, Status.PARKED, first, second, behind)
    assert KeyOrder(runtime.stores["ord"]).release_orphans() == 2
    assert [status(runtime, i) for i in (first, second, head, behind)] == [
        Status.PENDING,
        Status.PENDING,
        Status.PENDING,
        Status.PARKED,
    ]


def test_maintenance_leaves_a_key_whose_rows_a_consumer_holds(runtime: Runtime) -> None:
    if runtime.engine.dialect.name == "sqlite":
        pytest.skip("row locks: a SQLite writer holds the whole database")
    head, later = publish_steps(runtime, [("K", {"seq": 1}), ("K", {"seq": 2})])
    set_status(runtime, Status.PARKED, later)
    set_status(runtime, Status.CONSUMED, head)
    t = runtime.stores["ord"].table
    order = KeyOrder(runtime.stores["ord"])
    with runtime.engine.connect() as consumer, consumer.begin():
        consumer.execute(select(t.c.id).where(t.c.id == later).with_for_update()).all()
        assert order.release_orphans() == 0  # in flux: no wait, no false release
    assert status(runtime, later) is Status.PARKED
    assert order.release_orphans() == 1  # the next round, once it is free


def test_events_without_a_key_are_not_ordered(runtime: Runtime) -> None:
    with Session(runtime.engine) as session, session.begin():
        fails = publish(
            session, "ord.step", {"seq": 1, "fail_attempts": 1}, registry=runtime.registry
        )
        other = publish(session, "ord.step", {"seq": 2}, registry=runtime.registry)
    out = deliver(runtime, [fails, other])
    assert fails in out.failed and out.consumed == [other] and out.parked == []


def test_a_head_with_remote_work_releases_its_key_once_the_remote_work_succeeded(
    runtime: Runtime,
) -> None:
    """A row with ``after_commit`` is finished only after its batch: marking it consumed
    then must release the rows of its key parked behind it (no wait for maintenance)."""
    from outbox_app.context import Event
    from outbox_app.worker.consumer import ServiceConsumer

    sent: list[int] = []

    async def notify(event: Event, result: object) -> None:
        sent.append(event.outbox_id)

    @runtime.registry.handler("ord.remote", service="ord", after_commit=notify)
    def remote(ctx: HandlerContext) -> None:
        ctx.insert(steps, outbox_id=ctx.event.outbox_id, stream="K", seq=ctx.payload["seq"])

    with Session(runtime.engine) as session, session.begin():
        head = publish(session, "ord.remote", {"seq": 1}, key="K", registry=runtime.registry)
    (later,) = publish_steps(runtime, [("K", {"seq": 2})])
    ids = relay_round(runtime)
    store = runtime.stores["ord"]
    records = [encode(r)[1] for i in ids if (r := store.get(i)) is not None]
    out = asyncio.run(ServiceConsumer(runtime, "ord").handle(records))  # type: ignore[arg-type]
    assert sent == [head] and out.consumed == [head] and out.parked == [later]
    assert status(runtime, head) is Status.CONSUMED
    assert status(runtime, later) is Status.PENDING  # released, due now
    assert relay_round(runtime) == [later]
    assert deliver(runtime, [later]).consumed == [later]
    assert effects(runtime, "K") == [1, 2]
