"""The relay in process, against MariaDB and SQLite, with a recording sender in place of
the broker (the end-to-end tests use the real one)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from aiokafka.errors import MessageSizeTooLargeError, NotLeaderForPartitionError
from sqlalchemy.orm import Session

from outbox_app import Registry, Status, publish
from outbox_app.envelope import KafkaRecord
from outbox_app.ops.queries import OutboxQueries
from outbox_app.settings import Settings
from outbox_app.worker.producer import Sent, failed
from outbox_app.worker.relay import BrokerTrouble, Relay
from outbox_app.worker.runtime import Runtime


class Sender:
    """Acks every record, or fails the ones it is told to, like a broker would; one
    future per record (the real publisher has one per partition batch)."""

    def __init__(
        self,
        fail_ids: set[int] | None = None,
        refuse_after: int | None = None,
        error: Exception | None = None,
    ) -> None:
        self.sent: list[tuple[str, bytes | None, dict[str, Any], dict[str, bytes]]] = []
        self.fail_ids = fail_ids or set()
        self.refuse_after = refuse_after
        self.error = error or NotLeaderForPartitionError()

    async def __call__(self, topic: str, records: list[KafkaRecord]) -> Sent:
        out: Sent = []
        for i, (key, value, headers) in enumerate(records):
            if self.refuse_after is not None and len(self.sent) >= self.refuse_after:
                out.append(
                    (list(range(i, len(records))), failed(ConnectionError("broker unreachable")))
                )
                break
            doc = json.loads(value)
            self.sent.append((topic, key, doc, dict(headers)))
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            if doc["outbox_id"] in self.fail_ids:
                fut.set_exception(self.error)
            else:
                fut.set_result(None)
            out.append(([i], fut))
        return out


@pytest.fixture
def runtime(db_url: str) -> Iterator[Runtime]:
    reg = Registry()
    reg.register_event("chat.persist", "agent")
    settings = Settings(database_url=db_url, relay_batch=10, backoff_jitter=0.0, handler_modules=())
    rt = Runtime(settings, reg, ["agent"])
    asyncio.run(rt.start())
    try:
        yield rt
    finally:
        rt.close()


def add(rt: Runtime, n: int) -> list[int]:
    with Session(rt.engine) as session, session.begin():
        return [
            publish(session, "chat.persist", {"i": i}, key=f"k{i % 3}", registry=rt.registry)
            for i in range(n)
        ]


def relay(rt: Runtime, sender: Sender) -> Relay:
    return Relay(rt, "agent", sender)


def test_run_once_publishes_with_keys_and_marks_published(runtime: Runtime) -> None:
    ids = add(runtime, 4)
    sender = Sender()
    assert asyncio.run(relay(runtime, sender).run_once()) == 4
    assert [doc["outbox_id"] for _, _, doc, _ in sender.sent] == ids
    topic, key, doc, headers = sender.sent[0]
    assert topic == "outbox.agent" and key == b"k0" and doc["payload"] == {"i": 0}
    assert headers["ce_id"] == f"agent:{ids[0]}".encode()
    store = runtime.stores["agent"]
    assert all(store.get(i).status is Status.PUBLISHED for i in ids)  # type: ignore[union-attr]
    assert asyncio.run(relay(runtime, sender).run_once()) == 0


def test_a_record_the_broker_refuses_is_its_failed_attempt_and_the_rest_are_published(
    runtime: Runtime,
) -> None:
    ids = add(runtime, 3)
    sender = Sender(fail_ids={ids[1]}, error=MessageSizeTooLargeError())
    asyncio.run(relay(runtime, sender).run_once())
    store = runtime.stores["agent"]
    failed = store.get(ids[1])
    assert failed is not None and failed.status is Status.PENDING and failed.retry_count == 1
    assert failed.last_error is not None
    assert failed.last_error.startswith("publish to outbox.agent failed: MessageSizeTooLargeError")
    assert store.get(ids[0]).status is Status.PUBLISHED  # type: ignore[union-attr]
    assert store.get(ids[2]).status is Status.PUBLISHED  # type: ignore[union-attr]


def test_a_broker_failure_spends_no_attempt_and_gives_the_rows_back_at_once(
    runtime: Runtime,
) -> None:
    ids = add(runtime, 3)
    sender = Sender(fail_ids={ids[1]})  # NotLeaderForPartition: the broker's, not the event's
    with pytest.raises(BrokerTrouble, match="NotLeaderForPartitionError"):
        asyncio.run(relay(runtime, sender).run_once())
    store = runtime.stores["agent"]
    back = store.get(ids[1])
    assert back is not None and back.status is Status.PENDING and back.retry_count == 0
    assert back.last_error is None
    claim = store.claim_due(10, 30)  # due again now, not when the lease ends
    assert claim is not None and claim.ids == [ids[1]]
    assert store.get(ids[0]).status is Status.PUBLISHED  # type: ignore[union-attr]


def test_an_unreachable_broker_fails_the_rest_of_the_batch_at_once(runtime: Runtime) -> None:
    ids = add(runtime, 5)
    sender = Sender(refuse_after=2)
    with pytest.raises(BrokerTrouble, match="broker unreachable"):
        asyncio.run(relay(runtime, sender).run_once())
    store = runtime.stores["agent"]
    rows = [store.get(i) for i in ids]
    assert [r.status for r in rows] == [Status.PUBLISHED] * 2 + [Status.PENDING] * 3  # type: ignore[union-attr]
    assert len(sender.sent) == 2  # no send attempted after the first refusal
    assert [r.retry_count for r in rows[2:]] == [0, 0, 0]  # type: ignore[union-attr]


def test_an_outage_pauses_the_relay_once_and_it_resumes_when_the_broker_answers(
    runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    ids = add(runtime, 4)
    sender = Sender(refuse_after=0)  # the broker is down
    r = relay(runtime, sender)

    async def ticks() -> None:
        runtime.ready.set()
        # A round's failed acks pause the relay at its next tick (they settle after
        # the tick that sent them): tick until paused, then a few times more.
        deadline = time.monotonic() + 10
        while r._paused_since is None and time.monotonic() < deadline:
            r._next_poll = 0.0  # no waiting in a test: each tick tries at once
            await r.tick()
        for _ in range(2):
            r._next_poll = 0.0
            await r.tick()
        assert (
            runtime.health.broker.up is False
            and "broker unreachable" in runtime.health.broker.reason
        )
        assert runtime.metrics.relay_paused.labels("agent")._value.get() == 1
        sender.refuse_after = None  # back
        r._next_poll = 0.0
        await r.tick()

    with caplog.at_level("INFO", logger="outbox_app.worker.relay"):
        asyncio.run(ticks())
    messages = [rec.getMessage() for rec in caplog.records]
    assert sum("paused, broker unavailable" in m for m in messages) == 1, messages
    assert any("resumed after" in m for m in messages), messages
    assert (
        runtime.health.broker.up and runtime.metrics.relay_paused.labels("agent")._value.get() == 0
    )
    store = runtime.stores["agent"]
    assert [store.get(i).status for i in ids] == [Status.PUBLISHED] * 4  # type: ignore[union-attr]
    assert [store.get(i).retry_count for i in ids] == [0] * 4  # type: ignore[union-attr]


def test_tick_drains_a_backlog_larger_than_a_batch_in_one_call(runtime: Runtime) -> None:
    add(runtime, 25)  # relay_batch is 10
    sender = Sender()

    async def one_tick() -> None:
        runtime.ready.set()
        r = relay(runtime, sender)
        await r.tick()
        assert len(sender.sent) == 25  # sent in this tick; the last rounds settle after
        await r.settle_all()

    asyncio.run(one_tick())
    assert len(sender.sent) == 25
    assert OutboxQueries(runtime.engine, runtime.registry.route("agent")).counts().published == 25


def test_a_tick_claims_again_only_after_a_full_claim(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """25 rows with a batch of 10: claims of 10, 10 and 5, and no fourth claim (a claim
    that was not full took every due row; claiming again would cost a transaction for
    nothing under a light load)."""
    add(runtime, 25)
    store = runtime.stores["agent"]
    claims: list[int] = []
    claim_due = store.claim_due

    def counted(limit: int, lease_s: float, *published: Any) -> Any:
        claim = claim_due(limit, lease_s, *published)
        claims.append(0 if claim is None else len(claim.rows))
        return claim

    monkeypatch.setattr(store, "claim_due", counted)

    async def one_tick() -> None:
        runtime.ready.set()
        r = relay(runtime, Sender())
        await r.tick()
        await r.settle_all()

    asyncio.run(one_tick())
    assert claims == [10, 10, 5]


class HeldSender(Sender):
    """Takes every record and acks none until told to."""

    def __init__(self) -> None:
        super().__init__()
        self.held: list[asyncio.Future[None]] = []

    async def __call__(self, topic: str, records: list[KafkaRecord]) -> Sent:
        out: Sent = []
        for i, (key, value, headers) in enumerate(records):
            self.sent.append((topic, key, json.loads(value), dict(headers)))
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self.held.append(fut)
            out.append(([i], fut))
        return out

    def ack_all(self) -> None:
        for fut in self.held:
            if not fut.done():
                fut.set_result(None)


def test_a_tick_does_not_wait_for_its_acks_and_a_stopping_worker_settles_them(
    runtime: Runtime,
) -> None:
    """The next poll comes an interval after the sends, not after the acks and the
    mark; the rows stay leased meanwhile, so the next tick claims only new rows."""
    first = add(runtime, 3)
    sender = HeldSender()
    r = relay(runtime, sender)
    store = runtime.stores["agent"]

    async def scenario() -> None:
        runtime.ready.set()
        await r.tick()
        assert len(sender.sent) == 3
        assert [store.get(i).status for i in first] == [Status.PENDING] * 3  # type: ignore[union-attr]
        second = add(runtime, 2)
        r._next_poll = 0.0
        await r.tick()  # the first round's acks are still outstanding
        assert [doc["outbox_id"] for _, _, doc, _ in sender.sent] == first + second
        sender.ack_all()
        for stop in runtime.on_stop:  # as the worker does when it stops
            await stop()

    asyncio.run(scenario())
    ids = [doc["outbox_id"] for _, _, doc, _ in sender.sent]
    assert [store.get(i).status for i in ids] == [Status.PUBLISHED] * 5  # type: ignore[union-attr]


def test_acked_rows_are_marked_published_in_the_next_claims_transaction(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One commit per relay round: the rows a round's acks confirmed are marked by the
    next claim (leased, so hidden from every relay, until then)."""
    ids = add(runtime, 3)
    r = relay(runtime, Sender())
    store = runtime.stores["agent"]
    alone: list[list[int]] = []
    monkeypatch.setattr(store, "mark_published", lambda row_ids, token: alone.append(row_ids))

    async def scenario() -> None:
        runtime.ready.set()
        await r.tick()
        await asyncio.wait(list(r._settling))  # the round's acks came
        assert [store.get(i).status for i in ids] == [Status.PENDING] * 3  # type: ignore[union-attr]
        r._next_poll = 0.0
        await r.tick()  # nothing new to claim; its transaction marks the three

    asyncio.run(scenario())
    assert [store.get(i).status for i in ids] == [Status.PUBLISHED] * 3  # type: ignore[union-attr]
    assert alone == []  # no transaction of their own


def test_tick_survives_a_database_failure(runtime: Runtime) -> None:
    add(runtime, 2)
    r = relay(runtime, Sender())

    def broken(*args: Any) -> None:
        raise ConnectionError("database went away")

    r.store.claim_due = broken  # type: ignore[method-assign]

    async def ticks() -> None:
        runtime.ready.set()
        await r.tick()  # logged, not raised
        assert runtime.health.database.up is False
        assert r._next_poll > time.monotonic()  # it backs off instead of spinning

    asyncio.run(ticks())


def test_a_mark_that_loses_a_deadlock_is_made_again(runtime: Runtime) -> None:
    from sqlalchemy.exc import OperationalError

    ids = add(runtime, 3)
    r = relay(runtime, Sender())
    real, calls = r.store.mark_published, []

    def deadlocked_once(row_ids: list[int], token: Any) -> int:
        calls.append(list(row_ids))
        if len(calls) == 1:  # a consumer held the same rows' index locks the other way
            raise OperationalError("UPDATE ...", {}, Exception(1213, "Deadlock found"))
        return real(row_ids, token)

    r.store.mark_published = deadlocked_once  # type: ignore[method-assign]
    assert asyncio.run(r.run_once()) == 3
    assert calls == [ids, ids]
    assert OutboxQueries(runtime.engine, runtime.registry.route("agent")).counts().published == 3


def test_a_handlers_follow_up_event_wakes_this_workers_relay_after_the_commit(
    db_url: str,
) -> None:
    """An idle relay polls seldom; a handler here that published a follow-up event
    makes it poll at its next tick, once the batch committed."""
    from outbox_app import HandlerContext
    from outbox_app.envelope import encode
    from outbox_app.worker.consumer import ServiceConsumer

    reg = Registry()
    reg.register_event("chat.persist", "agent")

    @reg.handler("order.placed", service="shop")
    def placed(ctx: HandlerContext) -> None:
        ctx.publish("chat.persist", {"order": ctx.payload["n"]}, key="c")

    settings = Settings(
        database_url=db_url,
        relay_interval=3600,  # after one empty poll, the next is an hour away
        relay_idle_interval=3600,
        backoff_jitter=0.0,
        handler_modules=(),
    )
    rt = Runtime(settings, reg, ["agent", "shop"])
    asyncio.run(rt.start())
    try:
        sender = Sender()
        agent_relay = relay(rt, sender)
        with Session(rt.engine) as session, session.begin():
            order = publish(session, "order.placed", {"n": 1}, registry=reg)

        async def scenario() -> None:
            rt.ready.set()
            await agent_relay.tick()  # nothing yet: the relay goes idle for an hour
            await agent_relay.tick()
            assert sender.sent == []  # idle: this tick did not poll
            row = rt.stores["shop"].get(order)
            assert row is not None
            out = await ServiceConsumer(rt, "shop").handle([encode(row)[1]])
            assert out.consumed == [order] and out.published_to == {"agent"}
            await agent_relay.tick()  # woken: polls now
            await agent_relay.settle_all()

        asyncio.run(scenario())
        assert [doc["event_type"] for _, _, doc, _ in sender.sent] == ["chat.persist"]
    finally:
        rt.close()
