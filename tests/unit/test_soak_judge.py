"""The soak judge's order check, on a fabricated ledger and snapshot (pure logic)."""

from __future__ import annotations

from outbox_app.devtools.soak.producer import Ledger, Sent
from outbox_app.devtools.soak.verify import Judge, Snapshot


def _step(uid: str, outbox_id: int, seq: int) -> Sent:
    return Sent(uid, outbox_id, "soak_seq", "soak.step", "p0-st0", str(seq))


def _judge(ledger: Ledger, effects: list[int], orders: set[str]) -> Judge:
    snap = Snapshot(
        orders=orders,
        status={("soak_seq", i): ("consumed", None) for i in effects},
        chat={},
        effects={},
        tasks={},
        memories={},
        steps={"p0-st0": effects},
    )
    return Judge(snap, ledger)


def test_a_step_whose_commit_raised_but_happened_keeps_its_place_in_the_stream() -> None:
    ledger = Ledger()
    ledger.committed += [_step("p0-1", 10, 1)]
    ledger.ambiguous += [("p0-2", [_step("p0-2", 11, 2)])]  # committed, the client never knew
    ledger.committed += [_step("p0-3", 12, 3)]
    judge = _judge(ledger, [10, 11, 12], {"p0-1", "p0-2", "p0-3"})
    judge.each_stream_committed_in_order()
    assert judge.result.out_of_order == 0
    assert judge.result.violations == []


def test_effects_committed_against_the_streams_order_are_counted() -> None:
    ledger = Ledger()
    ledger.committed += [_step("p0-1", 10, 1), _step("p0-2", 11, 2), _step("p0-3", 12, 3)]
    judge = _judge(ledger, [10, 12, 11], {"p0-1", "p0-2", "p0-3"})
    judge.each_stream_committed_in_order()
    assert judge.result.out_of_order == 1
    assert judge.result.details["out_of_order_streams"] == ["p0-st0"]


def test_an_effect_of_a_step_nobody_committed_is_a_violation() -> None:
    ledger = Ledger()
    ledger.committed += [_step("p0-1", 10, 1)]
    ledger.failed += [("p0-2", [_step("p0-2", 11, 2)])]
    judge = _judge(ledger, [10, 11], {"p0-1"})
    judge.each_stream_committed_in_order()
    assert judge.result.violations == ["stream p0-st0: effects of steps nobody committed"]
