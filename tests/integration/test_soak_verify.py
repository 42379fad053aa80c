"""The soak's judge: ``Soak.verify`` must see a lost effect, a doubled one and a trace of a
rolled-back transaction, or its ``lost=0 doubled=0`` would prove nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, insert
from sqlalchemy.orm import Session

from handlers.agent import chat_history
from handlers.memory import memories
from outbox_app import default_registry, publish
from outbox_app.clock import utcnow
from outbox_app.database import make_engine
from outbox_app.devtools.soak import Ledger, Sent, verify
from outbox_app.schema import create_schema
from outbox_app.store import OutboxStore


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    default_registry.load_modules(["handlers", "outbox_app.devtools.soak.handlers"])
    eng = make_engine(f"sqlite:///{tmp_path / 'soak.sqlite3'}")
    create_schema(eng, default_registry.routes(), default_registry.metadata)
    try:
        yield eng
    finally:
        eng.dispose()


class Book:
    """Commits events the way the soak's producer does, and records them."""

    def __init__(self, engine: Engine) -> None:
        self.engine, self.ledger, self.n = engine, Ledger(), 0

    def tx(self, events: list[tuple[str, Any, str, str]], commit: bool = True) -> list[Sent]:
        self.n += 1
        uid = f"t{self.n}"
        sent = []
        from outbox_app.devtools.soak.handlers import soak_orders

        with Session(self.engine) as session:
            session.begin()
            session.execute(insert(soak_orders).values(uid=uid, events=1, created_at=utcnow()))
            for event_type, payload, ref, value in events:
                oid = publish(session, event_type, payload, key="k")
                service = default_registry.owner(event_type)
                sent.append(Sent(uid, oid, service, event_type, ref, value))
            if commit:
                session.commit()
                self.ledger.committed.extend(sent)
            else:
                session.rollback()
                self.ledger.rolled_back.append((uid, sent))
        return sent

    def chat(self, commit: bool = True) -> Sent:
        payload = {"user_id": 1, "conversation_id": "c", "role": "user", "message": "m"}
        return self.tx([("chat_history.persist", payload, "", "")], commit)[0]

    def memory(self, user: int, value: str) -> Sent:
        payload = {"user_id": user, "key": "k0", "value": value}
        return self.tx([("memory.upsert", payload, f"{user}|k0", value)])[0]

    def consumed(self, *sent: Sent) -> None:
        for s in sent:
            OutboxStore(self.engine, default_registry.route(s.service)).mark_consumed([s.outbox_id])

    def dead(self, *sent: Sent) -> None:
        for s in sent:
            OutboxStore(self.engine, default_registry.route(s.service)).mark_dead(
                {s.outbox_id: "test"}
            )

    def chat_rows(self, outbox_id: int, n: int) -> None:
        row = {"user_id": 1, "conversation_id": "c", "role": "user", "message": "m"}
        with self.engine.begin() as conn:
            for _ in range(n):
                conn.execute(insert(chat_history).values(outbox_id=outbox_id, **row))

    def memory_row(self, user: int, version: int, value: str, outbox_id: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                insert(memories).values(
                    user_id=user,
                    mkey="k0",
                    value=value,
                    version=version,
                    last_outbox_id=outbox_id,
                    updated_at=utcnow(),
                )
            )


def judge(engine: Engine, ledger: Ledger) -> Any:
    return verify(engine, ledger, default_registry)


def test_a_clean_run_is_clean(engine: Engine) -> None:
    book = Book(engine)
    ok = book.chat()
    book.consumed(ok)
    book.chat_rows(ok.outbox_id, 1)
    m1, m2 = book.memory(1, "a"), book.memory(1, "b")
    book.consumed(m1, m2)
    book.memory_row(1, 2, "b", m2.outbox_id)
    doomed = book.tx([("soak.doomed", {"uid": "x"}, "", "")])[0]
    book.dead(doomed)
    book.chat(commit=False)
    res = judge(engine, book.ledger)
    assert (res.events, res.consumed, res.dead, res.lost, res.doubled) == (4, 3, 1, 0, 0)
    assert res.expected_dead == 1 and res.rolled_back == 1
    assert res.violations == []


def test_lost_doubled_and_leftovers_are_all_seen(engine: Engine) -> None:
    book = Book(engine)
    lost, doubled, dead = book.chat(), book.chat(), book.chat()
    book.consumed(lost, doubled)
    book.chat_rows(doubled.outbox_id, 2)
    book.dead(dead)  # dead without an effect: counted dead, not lost, but unexpected
    over = [book.memory(1, "a"), book.memory(1, "b")]
    under = [book.memory(2, "c"), book.memory(2, "d")]
    book.consumed(*over, *under)
    book.memory_row(1, 3, "b", over[1].outbox_id)  # one upsert applied twice
    book.memory_row(2, 1, "c", under[0].outbox_id)  # one upsert never applied
    from outbox_app.devtools.soak.handlers import soak_effects

    flaky = book.tx([("soak.flaky", {"uid": "f"}, "", "")])[0]
    book.consumed(flaky)
    with engine.begin() as conn:
        for _ in range(2):
            conn.execute(
                insert(soak_effects).values(
                    outbox_id=flaky.outbox_id,
                    event_type="soak.flaky",
                    attempt=1,
                    created_at=utcnow(),
                )
            )
    gone = book.chat(commit=False)
    book.chat_rows(gone.outbox_id, 1)  # an effect of a transaction that never committed
    res = judge(engine, book.ledger)
    assert res.lost == 2  # the chat row and one memory upsert
    assert res.doubled == 3  # the chat row, one memory upsert, the flaky effect
    assert res.dead == 1 and res.unexpected_dead == 1
    assert any("never committed" in v for v in res.violations), res.violations
    assert any("dead unexpectedly" in v for v in res.violations), res.violations


def test_a_stuck_row_is_lost_and_reported_live(engine: Engine) -> None:
    book = Book(engine)
    book.tx([("soak.doomed", {"uid": "s"}, "", "")])  # never consumed, never dead
    res = judge(engine, book.ledger)
    assert res.lost == 1
    assert any("still live" in v for v in res.violations), res.violations


def test_an_id_reused_after_a_crash_is_not_a_leftover(engine: Engine) -> None:
    # InnoDB may hand a rolled-back insert's id out again after a crash restart.
    book = Book(engine)
    ok = book.chat()
    book.consumed(ok)
    book.chat_rows(ok.outbox_id, 1)
    reused = Sent("gone", ok.outbox_id, "agent", "chat_history.persist")
    book.ledger.rolled_back.append(("gone", [reused]))
    res = judge(engine, book.ledger)
    assert (res.lost, res.doubled, res.violations) == (0, 0, [])
    # but the same id committed twice means a committed row vanished
    book.ledger.committed.append(Sent("again", ok.outbox_id, "agent", "chat_history.persist"))
    res = judge(engine, book.ledger)
    assert any("committed twice" in v for v in res.violations), res.violations


def test_a_stream_whose_effects_committed_out_of_order_is_counted(engine: Engine) -> None:
    from outbox_app.devtools.soak.handlers import soak_steps

    book = Book(engine)
    one, two, three = (
        book.tx([("soak.step", {"stream": "s", "seq": n}, "s", str(n))])[0] for n in (1, 2, 3)
    )
    book.consumed(one, two, three)
    with engine.begin() as conn:  # the effects of steps 2 and 1 committed the wrong way round
        for s, seq in ((two, 2), (one, 1), (three, 3)):
            conn.execute(insert(soak_steps).values(outbox_id=s.outbox_id, stream="s", seq=seq))
    res = judge(engine, book.ledger)
    assert res.out_of_order == 1 and (res.lost, res.doubled) == (0, 0)
    assert not res.ok


def test_a_skipped_doomed_step_is_dead_as_expected_and_its_stream_in_order(engine: Engine) -> None:
    from outbox_app.devtools.soak.handlers import soak_steps

    book = Book(engine)
    doomed = book.tx([("soak.step", {"stream": "s", "seq": 1, "doomed": True}, "s", "1")])[0]
    doomed = Sent(doomed.uid, doomed.outbox_id, doomed.service, doomed.event_type, "s", "1", True)
    book.ledger.committed[-1] = doomed
    after = book.tx([("soak.step", {"stream": "s", "seq": 2}, "s", "2")])[0]
    book.dead(doomed)
    from outbox_app.ordering import KeyOrder

    assert KeyOrder(OutboxStore(engine, default_registry.route("soak_seq"))).skip(
        [doomed.outbox_id]
    ) == [doomed.outbox_id]
    book.consumed(after)
    with engine.begin() as conn:
        conn.execute(insert(soak_steps).values(outbox_id=after.outbox_id, stream="s", seq=2))
    res = judge(engine, book.ledger)
    assert (res.lost, res.doubled, res.out_of_order, res.violations) == (0, 0, 0, [])
    assert res.dead == 1 and res.expected_dead == 1
