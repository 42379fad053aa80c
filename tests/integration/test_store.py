"""The state machine contract, run on MariaDB and on SQLite alike."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import Engine, event, func, select, update
from sqlalchemy.orm import Session

from outbox_app import InvalidEvent, Status, UnknownEventType, WrongService, publish
from outbox_app.ops.queries import OutboxQueries
from outbox_app.registry import Registry
from outbox_app.retry import RetryPolicy
from outbox_app.schema import create_schema, outbox_table
from outbox_app.store import OutboxStore

NO_JITTER = RetryPolicy(cap=10, jitter=0.0)


def add(
    engine: Engine, registry: Registry, n: int = 1, event_type: str = "chat.persist", **kw: object
) -> list[int]:
    with Session(engine) as session, session.begin():
        return [
            publish(session, event_type, {"n": i}, key=f"k{i}", registry=registry, **kw)  # type: ignore[arg-type]
            for i in range(n)
        ]


def store(engine: Engine, registry: Registry, service: str = "agent") -> OutboxStore:
    return OutboxStore(engine, registry.route(service), NO_JITTER)


def queries(engine: Engine, registry: Registry, service: str = "agent") -> OutboxQueries:
    return OutboxQueries(engine, registry.route(service))


def status_of(s: OutboxStore, row_id: int) -> Status:
    row = s.get(row_id)
    assert row is not None
    return row.status


def age_row(s: OutboxStore, row_id: int, column: str, seconds: float) -> None:
    """Move one timestamp of a row into the past (test set-up only)."""
    t = s.table
    with s.engine.begin() as conn:
        row = conn.execute(select(t.c[column]).where(t.c.id == row_id)).scalar_one()
        conn.execute(
            update(t).where(t.c.id == row_id).values({column: row - timedelta(seconds=seconds)})
        )


def row_count(engine: Engine, registry: Registry, service: str = "agent") -> int:
    t = outbox_table(registry.route(service))
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(t)).scalar_one())


# -- write path ------------------------------------------------------------------------


def test_publish_writes_a_pending_row_in_the_callers_transaction(schema, registry):
    (row_id,) = add(schema, registry)
    row = store(schema, registry).get(row_id)
    assert row is not None
    assert row.status is Status.PENDING
    assert (row.event_type, row.service_name, row.topic) == (
        "chat.persist",
        "agent",
        "outbox.agent",
    )
    assert row.message_key == "k0" and row.payload == '{"n":0}'
    assert row.retry_count == 0 and row.max_retry == 20
    assert row.next_retry_at is not None and row.traceparent and row.traceparent.startswith("00-")


def test_rollback_of_the_business_transaction_leaves_no_row(schema, registry):
    with Session(schema) as session, session.begin():
        publish(session, "chat.persist", {"a": 1}, registry=registry)
        session.rollback()
    with pytest.raises(RuntimeError), Session(schema) as session, session.begin():
        publish(session, "chat.persist", {"a": 1}, registry=registry)
        raise RuntimeError("business failure")
    assert row_count(schema, registry) == 0


def test_publish_never_commits_for_the_caller(schema, registry):
    with Session(schema) as session:
        session.begin()
        publish(session, "chat.persist", {"a": 1}, registry=registry)
        assert session.in_transaction()
        session.rollback()
    assert row_count(schema, registry) == 0


@pytest.mark.parametrize(
    ("event_type", "payload", "key", "error", "message"),
    [
        ("nope.unknown", {}, None, UnknownEventType, "unknown event type 'nope.unknown'"),
        ("chat.persist", {"when": object()}, None, InvalidEvent, "not JSON-serialisable"),
        ("chat.persist", {"x": float("nan")}, None, InvalidEvent, "not JSON-serialisable"),
        ("chat.persist", {}, "k" * 256, InvalidEvent, "key is 256 characters, at most 255"),
        ("chat.persist", {}, 42, InvalidEvent, "key must be a string"),
    ],
)
def test_bad_input_raises_and_writes_nothing(
    schema, registry, event_type, payload, key, error, message
):
    add(schema, registry, 2)
    with Session(schema) as session, session.begin():
        with pytest.raises(error, match=message) as info:
            publish(session, event_type, payload, key=key, registry=registry)
        if error is InvalidEvent:
            assert "'chat.persist'" in str(info.value) and "'agent'" in str(info.value)
        publish(session, "chat.persist", {"ok": True}, registry=registry)  # txn still usable
    assert row_count(schema, registry) == 3


def test_publish_through_the_wrong_service_is_refused(schema, registry):
    with Session(schema) as session, session.begin():
        with pytest.raises(WrongService, match="'task.created' belongs to service 'task'.*'agent'"):
            publish(session, "task.created", {}, registry=registry, service="agent")
    assert row_count(schema, registry, "task") == 0


def test_create_schema_is_idempotent_and_safe_concurrently(engine, registry):
    errors: list[BaseException] = []

    def create() -> None:
        try:
            create_schema(engine, registry.routes())
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=create) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    create_schema(engine, registry.routes())
    assert row_count(engine, registry) == 0


# -- relay transitions ---------------------------------------------------------------------


def test_claim_leases_rows_and_hides_them_from_the_next_claim(schema, registry):
    ids = add(schema, registry, 5)
    s = store(schema, registry)
    claim = s.claim_due(limit=3, lease_s=30)
    assert claim is not None and claim.ids == ids[:3]
    again = s.claim_due(limit=10, lease_s=30)
    assert again is not None and again.ids == ids[3:]
    assert s.claim_due(limit=10, lease_s=30) is None


def test_expired_lease_makes_rows_due_again(schema, registry):
    ids = add(schema, registry, 2)
    s = store(schema, registry)
    claim = s.claim_due(limit=10, lease_s=-1)  # a relay that died: lease already over
    assert claim is not None
    again = s.claim_due(limit=10, lease_s=30)
    assert again is not None and again.ids == ids
    # the first relay comes back late: its token no longer matches, nothing changes
    assert s.mark_published(claim.ids, claim.token) == 0
    assert s.mark_published(again.ids, again.token) == 2


def test_mark_published_moves_pending_to_published(schema, registry):
    ids = add(schema, registry, 3)
    s = store(schema, registry)
    claim = s.claim_due(10, 30)
    assert claim is not None
    assert s.mark_published(claim.ids, claim.token) == 3
    for i in ids:
        row = s.get(i)
        assert row is not None and row.status is Status.PUBLISHED
        assert row.published_at is not None and row.next_retry_at is None
    assert s.claim_due(10, 30) is None


def test_late_published_never_overwrites_consumed_or_dead(schema, registry):
    a, b = add(schema, registry, 2)
    s = store(schema, registry)
    claim = s.claim_due(10, 30)
    assert claim is not None
    with schema.begin() as conn:  # the consumer was faster than the relay's bookkeeping
        s.lock_for_consume(conn, [a])
        assert s.mark_consumed([a], conn) == 1
    s.mark_dead({b: "poison"})
    assert s.mark_published(claim.ids, claim.token) == 0
    assert status_of(s, a) is Status.CONSUMED
    assert status_of(s, b) is Status.DEAD


def test_failed_publish_counts_as_an_attempt_for_the_claimed_rows(schema, registry):
    ids = add(schema, registry, 2)
    s = store(schema, registry)
    claim = s.claim_due(10, 30)
    assert claim is not None
    outcome = s.record_failures({i: "KafkaTimeoutError" for i in ids}, token=claim.token)
    assert outcome.retried == ids and outcome.dead == []
    row = s.get(ids[0])
    assert row is not None and row.status is Status.PENDING and row.retry_count == 1
    assert row.last_error == "KafkaTimeoutError"


def test_two_connections_claiming_at_once_never_get_the_same_row(schema, registry):
    if schema.dialect.name == "sqlite":
        pytest.skip("SQLite serialises writers; SKIP LOCKED is the MariaDB path")
    add(schema, registry, 400)
    s = store(schema, registry)
    barrier = threading.Barrier(4)
    claimed: list[list[int]] = [[] for _ in range(4)]

    def relay(slot: int) -> None:
        barrier.wait()
        # Every thread's first claim is made before any thread goes on: on a busy machine
        # one thread could otherwise take all 400 before the others were scheduled.
        first = s.claim_due(limit=25, lease_s=30)
        claimed[slot].extend(first.ids if first is not None else [])
        barrier.wait()
        while (claim := s.claim_due(limit=25, lease_s=30)) is not None:
            claimed[slot].extend(claim.ids)

    threads = [threading.Thread(target=relay, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [i for ids in claimed for i in ids]
    assert len(every) == 400 and len(set(every)) == 400
    assert all(claimed)  # the work really was shared: four claims at once, none empty


def test_open_claim_does_not_block_inserts(schema, registry):
    """READ COMMITTED: a claim in flight must not gap-lock producers out."""
    add(schema, registry, 3)
    t = outbox_table(registry.route("agent"))
    with schema.connect() as holder:
        holder.begin()
        holder.execute(
            select(t.c.id).where(t.c.status == "pending").with_for_update(skip_locked=True)
        ).all()
        if schema.dialect.name == "sqlite":
            holder.rollback()
        add(schema, registry, 1)
        holder.rollback()
    assert row_count(schema, registry) == 4


# -- consume transitions ---------------------------------------------------------------------


def test_consume_marks_rows_consumed_in_the_callers_transaction(schema, registry):
    a, b = add(schema, registry, 2)
    s = store(schema, registry)
    with schema.begin() as conn:
        rows = s.lock_for_consume(conn, [b, a, 999_999])
        assert sorted(rows) == [a, b]  # unknown ids are simply absent
        assert s.mark_consumed([a, b], conn) == 2
    row = s.get(a)
    assert row is not None and row.status is Status.CONSUMED and row.consumed_at is not None
    with schema.begin() as conn:
        assert s.mark_consumed([a, b], conn) == 0  # duplicate delivery: skipped


def test_the_hot_statements_run_as_driver_sql_on_mariadb_only(schema, registry):
    """driver_sql.py: the relay's and the consumer's statements skip SQLAlchemy's
    compiled path on MariaDB, where the driver's rows are what its types would make;
    SQLite keeps the compiled statements. Either way the outcome is the same."""
    a, b = add(schema, registry, 2)
    s = store(schema, registry)
    seen: list[tuple[bool, str]] = []

    def executed(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        seen.append((context.compiled is None, statement))

    event.listen(schema, "before_cursor_execute", executed)
    try:
        claim = s.claim_due(10, 30)
        assert claim is not None and claim.ids == [a, b]
        assert s.mark_published([a], claim.token) == 1
        with schema.begin() as conn:
            assert sorted(s.lock_for_consume(conn, [b, a])) == [a, b]
            assert s.mark_consumed([a, b], conn) == 2
    finally:
        event.remove(schema, "before_cursor_execute", executed)
    driver = [sql for raw, sql in seen if raw and "outbox" in sql]
    if schema.dialect.name == "sqlite":
        assert driver == []
    else:
        # claim, lease, mark published, lock, mark consumed: each with its ids inlined
        assert len(driver) == 5
        assert f"IN ({a}, {b})" in driver[-1] and "FOR UPDATE SKIP LOCKED" in driver[0]
    assert status_of(s, a) is Status.CONSUMED and status_of(s, b) is Status.CONSUMED


def test_consume_rolled_back_with_the_handler(schema, registry):
    (a,) = add(schema, registry, 1)
    s = store(schema, registry)
    with pytest.raises(RuntimeError), schema.begin() as conn:
        s.lock_for_consume(conn, [a])
        s.mark_consumed([a], conn)
        raise RuntimeError("handler failed")
    assert status_of(s, a) is Status.PENDING


def test_retry_follows_the_quadratic_backoff_until_dead(schema, registry):
    with Session(schema) as session, session.begin():
        row_id = publish(session, "chat.persist", {}, registry=registry, max_retry=12)
    s = store(schema, registry)
    t = s.table
    delays = []
    for attempt in range(1, 13):
        outcome = s.record_failures({row_id: f"boom {attempt}"})
        row = s.get(row_id)
        assert row is not None and row.retry_count == attempt
        assert row.last_error == f"boom {attempt}"
        if attempt < 12:
            assert outcome.retried == [row_id] and row.status is Status.PENDING
            assert row.next_retry_at is not None
            delays.append(round((row.next_retry_at - row.updated_at).total_seconds()))
        else:
            assert outcome.dead == [row_id] and row.status is Status.DEAD
            assert row.next_retry_at is None
    assert delays == [1, 4, 9, 16, 25, 36, 49, 64, 81, 100, 100]
    with schema.connect() as conn:  # dead rows are never claimed again
        assert conn.execute(select(t.c.status).where(t.c.id == row_id)).scalar_one() == "dead"
    assert s.claim_due(10, 30) is None


def test_failures_leave_consumed_and_dead_rows_alone(schema, registry):
    a, b = add(schema, registry, 2)
    s = store(schema, registry)
    s.mark_consumed([a])
    s.mark_dead({b: "unknown event type"})
    outcome = s.record_failures({a: "late", b: "late"})
    assert outcome.retried == [] and outcome.dead == []
    row_b = s.get(b)
    assert status_of(s, a) is Status.CONSUMED
    assert row_b is not None and row_b.last_error == "unknown event type"


def test_last_error_is_truncated_to_2000_characters(schema, registry):
    (a,) = add(schema, registry, 1)
    s = store(schema, registry)
    s.record_failures({a: "x" * 10_000})
    row = s.get(a)
    assert row is not None and row.last_error is not None and len(row.last_error) == 2000


def test_backoff_jitter_stays_within_its_fraction():
    policy = RetryPolicy(cap=10, jitter=0.2)
    for attempt in range(1, 15):
        base = min(attempt, 10) ** 2
        assert base <= policy.delay(attempt) <= base * 1.2


# -- operators and maintenance ---------------------------------------------------------------


def test_requeue_resets_the_attempt_budget(schema, registry):
    a, b, c = add(schema, registry, 3)
    s = store(schema, registry)
    s.record_failures({a: "boom"})
    s.mark_dead({a: "gave up", b: "gave up"})
    assert s.requeue_dead([a]) == [a]
    row = s.get(a)
    assert row is not None and row.status is Status.PENDING and row.retry_count == 0
    assert row.last_error == "gave up"  # history kept
    assert s.requeue_dead([c]) == []  # not dead: untouched
    assert s.requeue_dead() == [b]
    claim = s.claim_due(10, 30)
    assert claim is not None and sorted(claim.ids) == [a, b, c]


def test_requeue_by_event_type(schema, registry):
    (a,) = add(schema, registry, 1)
    (t1,) = add(schema, registry, 1, event_type="task.created")
    s, ts = store(schema, registry), store(schema, registry, "task")
    s.mark_dead({a: "x"})
    ts.mark_dead({t1: "x"})
    assert s.requeue_dead(event_type="other.type") == []
    assert s.requeue_dead(event_type="chat.persist") == [a]
    assert status_of(ts, t1) is Status.DEAD


def test_stale_published_rows_return_to_pending_without_spending_an_attempt(schema, registry):
    """Not consumed in time is the broker's or the consumers' doing, not the event's: a row
    with one attempt left comes back as often as it takes, its budget untouched."""
    fresh, stale, last_attempt = add(schema, registry, 3)
    s = store(schema, registry)
    claim = s.claim_due(10, 30)
    assert claim is not None
    s.mark_published(claim.ids, claim.token)
    age_row(s, stale, "published_at", 600)
    age_row(s, last_attempt, "published_at", 600)
    t = s.table
    with schema.begin() as conn:
        conn.execute(update(t).where(t.c.id == last_attempt).values(retry_count=19))
    assert s.recover_stale(visibility_s=300) == 2
    assert status_of(s, fresh) is Status.PUBLISHED
    for row_id, attempts in ((stale, 0), (last_attempt, 19)):
        row = s.get(row_id)
        assert row is not None and row.status is Status.PENDING and row.retry_count == attempts
        assert row.last_error is None
    claim = s.claim_due(10, 30)
    assert claim is not None and sorted(claim.ids) == [stale, last_attempt]


def test_purge_removes_only_old_consumed_rows(schema, registry):
    ids = add(schema, registry, 8)
    s = store(schema, registry)
    old_consumed, new_consumed = ids[:5], ids[5]
    s.mark_consumed([*old_consumed, new_consumed])
    for i in old_consumed:
        age_row(s, i, "consumed_at", 8 * 86400)
    published, dead = ids[6], ids[7]
    claim = s.claim_due(1, 30)
    assert claim is not None and claim.ids == [published]
    s.mark_published(claim.ids, claim.token)
    s.mark_dead({dead: "x"})
    age_row(s, published, "published_at", 30 * 86400)
    pending = add(schema, registry, 1)[0]
    assert s.purge_consumed(7 * 86400, batch=2, dry_run=True) == 5
    assert s.purge_consumed(7 * 86400, batch=2) == 5
    assert s.get(old_consumed[0]) is None
    assert status_of(s, new_consumed) is Status.CONSUMED
    assert status_of(s, published) is Status.PUBLISHED
    assert status_of(s, dead) is Status.DEAD
    assert status_of(s, pending) is Status.PENDING


def test_counts_per_status_and_oldest_pending_age(schema, registry):
    ids = add(schema, registry, 4)
    s = store(schema, registry)
    s.mark_consumed(ids[:2])
    s.mark_dead({ids[2]: "x"})
    age_row(s, ids[3], "created_at", 120)
    counts = queries(schema, registry).counts()
    assert (counts.pending, counts.published, counts.consumed, counts.dead) == (1, 0, 2, 1)
    assert counts.oldest_pending_age_s is not None and 119 <= counts.oldest_pending_age_s < 180
    assert queries(schema, registry, "task").counts().as_dict() == {
        "pending": 0,
        "published": 0,
        "consumed": 0,
        "dead": 0,
        "oldest_pending_age_s": None,
    }


def test_list_dead_pages_newest_first(schema, registry):
    ids = add(schema, registry, 5)
    s = store(schema, registry)
    for i in ids:
        s.mark_dead({i: f"reason {i}"})
    first = queries(schema, registry).list_by_status(Status.DEAD, limit=2)
    second = queries(schema, registry).list_by_status(Status.DEAD, limit=2, offset=2)
    seen = [r.id for r in first + second]
    assert len(set(seen)) == 4 and all(r.status is Status.DEAD for r in first)
