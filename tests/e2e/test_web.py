"""The outbox pages of a running worker, over HTTP: stats, dead letters, messages,
requeue (with its admin token), the dashboard's assets, and /metrics.

One worker serves the whole module (joining a group takes seconds). Tests keep out of
each other's way by service: ``agent`` for dead letters made by a failing handler and
for requeue, ``memory`` for pagination, ``task`` for the metrics workload.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, delete, update
from sqlalchemy.orm import Session

from outbox_app import Status, default_registry, publish
from outbox_app.clock import db_time
from outbox_app.database import make_engine
from outbox_app.ops.operations import Operations
from outbox_app.schema import create_schema
from outbox_app.store import OutboxStore
from tests.conftest import fresh_mariadb_database
from tests.support import TestBroker, Worker, port_open, unique_prefix, wait_for, worker_env

TOKEN = "web-test-token-" + uuid.uuid4().hex[:8]
READ_TOKEN = "web-read-token-" + uuid.uuid4().hex[:8]
ADMIN = {"X-Outbox-Admin-Token": TOKEN}  # payloads are business data: read with a token
SERVICES = ["agent", "memory", "task"]


# -- a running worker and a small HTTP client ------------------------------------------------
@dataclass
class Reply:
    status: int
    headers: Message
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def error(self) -> str:
        return str(self.json()["error"])


@dataclass
class Site:
    """A worker's web view, its database, and its log."""

    port: int
    engine: Engine
    worker: Worker

    def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> Reply:
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", data=data, method=method, headers=headers or {}
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return Reply(r.status, r.headers, r.read())
        except urllib.error.HTTPError as e:
            return Reply(e.code, e.headers, e.read())

    def get(self, path: str, **headers: str) -> Reply:
        return self.request("GET", path, headers=headers)

    def requeue(self, body: Any, token: str | None = TOKEN) -> Reply:
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["X-Outbox-Admin-Token"] = token
        return self.request("POST", "/outbox/dead/requeue/", body, headers)

    def stats(self) -> dict[str, Any]:
        reply = self.get("/outbox/stats/")
        assert reply.status == 200, reply.body
        return dict(reply.json()["services"])

    def store(self, service: str) -> OutboxStore:
        return OutboxStore(self.engine, default_registry.route(service))

    def status(self, service: str, outbox_id: int) -> Status | None:
        row = self.store(service).get(outbox_id)
        return None if row is None else row.status

    def wait_status(self, service: str, ids: list[int], status: Status, timeout: float = 30):
        wait_for(
            lambda: all(self.status(service, i) == status for i in ids),
            timeout,
            f"{service} rows {ids} to be {status.value}",
        )


def start_site(tmp_path: Path, broker: TestBroker, db_url: str, **env: str) -> Site:
    engine = make_engine(db_url)
    create_schema(engine, default_registry.routes(), default_registry.metadata)
    wenv = worker_env(db_url, broker, unique_prefix(), **env)
    worker = Worker(wenv, tmp_path / "worker.log").start()
    site = Site(int(wenv["OUTBOX_WEB_PORT"]), engine, worker)
    wait_for(lambda: port_open(site.port), 60, "the web view to listen")
    wait_for(lambda: site.get("/outbox/stats/").status == 200, 60, "the schema to be ready")
    return site


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, broker: TestBroker) -> Iterator[Site]:
    default_registry.load_modules(["handlers"])
    url, drop = fresh_mariadb_database("outbox_web")
    site = start_site(
        tmp_path_factory.mktemp("web"),
        broker,
        url,
        OUTBOX_SERVICES=",".join(SERVICES),
        OUTBOX_ADMIN_TOKEN=TOKEN,
        OUTBOX_READ_TOKEN=READ_TOKEN,
    )
    try:
        probe = chat(site.engine, "probe")
        site.wait_status("agent", [probe], Status.CONSUMED, timeout=90)  # the group has joined
        yield site
    finally:
        site.worker.stop()
        site.engine.dispose()
        drop()


# -- making rows -----------------------------------------------------------------------------
def chat(engine: Engine, message: str, role: str = "user", max_retry: int | None = None) -> int:
    payload = {"user_id": 7, "conversation_id": "c-web", "role": role, "message": message}
    with Session(engine) as session, session.begin():
        return publish(session, "chat_history.persist", payload, key="c-web", max_retry=max_retry)


def dead_rows(
    site: Site, service: str, event_type: str, payloads: list[dict[str, Any]]
) -> list[int]:
    """Rows that go straight to dead in the transaction that adds them, so the relay
    never sees them pending (a valid payload: a requeue will succeed)."""
    store = site.store(service)
    with site.engine.begin() as conn:
        ids = [
            store.add(conn, event_type=event_type, payload_json=json.dumps(p), key="k", max_retry=3)
            for p in payloads
        ]
        store.mark_dead({i: f"test: dead on arrival #{n}" for n, i in enumerate(ids)}, conn)
    return ids


def quiet(site: Site) -> dict[str, Any]:
    """Stats once nothing is pending or published (sent, waiting for its consumer)."""
    return wait_for(
        lambda: (
            (s := site.stats())
            and all(c["pending"] == 0 and c["published"] == 0 for c in s.values())
            and s
        ),
        60,
        "the outbox to drain",
    )


# -- stats -----------------------------------------------------------------------------------
def test_stats_is_the_design_document_for_the_services_this_worker_serves(site: Site) -> None:
    stats = quiet(site)
    assert sorted(stats) == SERVICES  # not notification or active_scheduler: not served here
    for counts in stats.values():
        assert set(counts) == {"pending", "published", "consumed", "dead", "oldest_pending_age_s"}
        assert counts["oldest_pending_age_s"] is None  # nothing pending
    ops = Operations.for_engine(site.engine, default_registry, SERVICES)
    assert site.get("/outbox/stats/").json() == ops.stats()  # `outbox-app stats --json`


def test_stats_report_the_age_of_the_oldest_pending_row(site: Site) -> None:
    store = site.store("memory")
    t = store.table
    with site.engine.begin() as conn:
        row_id = store.add(
            conn, event_type="memory.upsert", payload_json="{}", key=None, max_retry=3
        )
        # Created two minutes ago, due in an hour: the relay leaves it alone meanwhile.
        conn.execute(
            update(t)
            .where(t.c.id == row_id)
            .values(created_at=db_time(-120), next_retry_at=db_time(3600))
        )
    try:
        counts = site.stats()["memory"]
        assert counts["pending"] == 1
        assert 119 <= counts["oldest_pending_age_s"] < 180
    finally:
        with site.engine.begin() as conn:
            conn.execute(delete(t).where(t.c.id == row_id))


# -- dead letters ----------------------------------------------------------------------------
def test_a_handler_failure_is_listed_with_its_error_payload_and_times(site: Site) -> None:
    row_id = chat(site.engine, "beep", role="robot", max_retry=1)
    site.wait_status("agent", [row_id], Status.DEAD)

    page = site.get("/outbox/dead/?service=agent&limit=100", **ADMIN).json()
    item = next(i for i in page["items"] if i["id"] == row_id)
    assert item["event_type"] == "chat_history.persist"
    assert item["key"] == "c-web"
    assert item["status"] == "dead"
    assert "robot" in item["last_error"] and "role" in item["last_error"]
    assert item["payload"] == {
        "user_id": 7,
        "conversation_id": "c-web",
        "role": "robot",
        "message": "beep",
    }
    assert item["attempts"] == 1 and item["max_retry"] == 1  # one attempt, then no retry
    for field in ("created_at", "updated_at"):
        assert item[field].endswith("Z"), field
    # None when the consumer marked it dead before the relay's mark landed (that mark
    # touches pending rows only).
    assert item["published_at"] is None or item["published_at"].endswith("Z")
    assert item["consumed_at"] is None

    message = site.get(f"/outbox/messages/agent/{row_id}/", **ADMIN).json()
    assert message == item


def test_payloads_are_served_only_with_a_token_when_the_view_is_not_on_loopback(
    site: Site,
) -> None:
    """The site listens on 0.0.0.0 (the default): a dead letter's error and ids are for
    anyone who can reach it, its payload (business data) only for a token holder."""
    row_id = chat(site.engine, "secret business data", role="robot", max_retry=1)
    site.wait_status("agent", [row_id], Status.DEAD)
    anyone = site.get("/outbox/dead/?service=agent&limit=100").json()
    item = next(i for i in anyone["items"] if i["id"] == row_id)
    assert item["payload"] is None and item["payload_hidden"] is True
    assert "robot" in item["last_error"]  # the failure stays visible
    assert b"secret business data" not in site.get("/outbox/dead/?service=agent").body
    refused = site.get(f"/outbox/messages/agent/{row_id}/")
    assert refused.status == 403 and "read token" in refused.error
    wrong = site.get(f"/outbox/messages/agent/{row_id}/", **{"X-Outbox-Read-Token": "nope"})
    assert wrong.status == 403
    for headers in (
        {"X-Outbox-Read-Token": READ_TOKEN},
        ADMIN,
        {"Authorization": f"Bearer {READ_TOKEN}"},
    ):
        reply = site.get(f"/outbox/messages/agent/{row_id}/", **headers)
        assert reply.status == 200 and reply.json()["payload"]["message"] == "secret business data"
    assert READ_TOKEN not in site.worker.log()


def test_dead_letters_page_newest_first_without_gaps_or_overlaps(site: Site) -> None:
    ids = dead_rows(
        site,
        "memory",
        "memory.upsert",
        [{"user_id": 1, "key": f"k{n}", "value": "v"} for n in range(5)],
    )
    seen: list[int] = []
    offset: int | None = 0
    pages = 0
    while offset is not None:
        page = site.get(f"/outbox/dead/?service=memory&limit=2&offset={offset}").json()
        assert page["limit"] == 2 and page["offset"] == offset
        assert len(page["items"]) <= 2
        seen += [i["id"] for i in page["items"]]
        offset = page["next_offset"]
        pages += 1
    assert seen == sorted(ids, reverse=True)  # newest first; marked dead one after another
    assert pages == 3
    past_the_end = site.get("/outbox/dead/?service=memory&limit=2&offset=50").json()
    assert past_the_end["items"] == [] and past_the_end["next_offset"] is None

    filtered = site.get("/outbox/dead/?service=memory&event_type=memory.upsert&limit=500").json()
    assert [i["id"] for i in filtered["items"]] == seen


@pytest.mark.parametrize(
    ("query", "complaint"),
    [
        ("service=agent&limit=0", "limit"),
        ("service=agent&limit=501", "limit"),
        ("service=agent&limit=ten", "limit"),
        ("service=agent&limit=-1", "limit"),
        ("service=agent&offset=-1", "offset"),
        ("service=agent&offset=1.5", "offset"),
        ("service=nope", "unknown service 'nope'"),
        ("service=notification", "not served here"),
        ("limit=10", "service is required"),
        ("service=agent&event_type=no.such", "unknown event type"),
        ("service=agent&event_type=memory.upsert", "belongs to service 'memory'"),
    ],
)
def test_dead_letters_refuse_bad_input_with_400(site: Site, query: str, complaint: str) -> None:
    reply = site.get(f"/outbox/dead/?{query}")
    assert reply.status == 400
    assert complaint in reply.error


# -- dead letters grouped by failure ---------------------------------------------------------
def letters() -> str:
    """A run id without digits: digits would be masked out of the signature."""
    return "".join(chr(ord("a") + int(c, 16)) for c in uuid.uuid4().hex[:10])


def failing_rows(site: Site, run: str, n: int, secret: str) -> tuple[list[int], str]:
    """``n`` dead agent rows failing alike (their order ids and codes differ), with a
    valid payload carrying ``secret``: requeued, they are consumed."""
    store = site.store("agent")
    payload = {"user_id": 5, "conversation_id": "c-group", "role": "user", "message": secret}
    with site.engine.begin() as conn:
        ids = [
            store.add(
                conn,
                event_type="chat_history.persist",
                payload_json=json.dumps(payload),
                key=f"g{k}",
                max_retry=3,
            )
            for k in range(n)
        ]
        store.mark_dead(
            {i: f"Upstream{run}: order 'o-{i}' refused with {500 + k}" for k, i in enumerate(ids)},
            conn,
        )
    return ids, f"Upstream{run}: order '…' refused with N"


def group_of(site: Site, signature: str, **headers: str) -> dict[str, Any] | None:
    doc = site.get("/outbox/dead/groups/?service=agent&limit=500", **headers).json()
    return next((g for g in doc["groups"] if g["signature"] == signature), None)


def test_dead_letters_are_grouped_by_signature_without_their_payloads(site: Site) -> None:
    run = letters()
    ids, signature = failing_rows(site, run, 3, secret=f"private {run}")
    reply = site.get("/outbox/dead/groups/?service=agent")
    assert reply.status == 200, reply.body
    doc = reply.json()
    assert doc["service"] == "agent" and doc["scan_limit"] == 10_000 and doc["scan_cut"] is False
    assert doc["scanned"] >= 3 and doc["group_count"] >= 1
    group = group_of(site, signature)
    assert group is not None, doc
    assert group["count"] == 3 and group["event_types"] == ["chat_history.persist"]
    assert group["sample"]["id"] == max(ids)  # died in one statement: the highest id is newest
    assert group["sample"]["last_error"] == f"Upstream{run}: order 'o-{max(ids)}' refused with 502"
    assert group["first_seen"] <= group["last_seen"] and group["last_seen"].endswith("Z")
    # Payloads are business data: not in the groups, with or without a token.
    for headers in ({}, ADMIN, {"X-Outbox-Read-Token": READ_TOKEN}):
        body = site.get("/outbox/dead/groups/?service=agent", **headers).body
        assert f"private {run}".encode() not in body and b'"payload"' not in body


def test_requeue_of_a_group_needs_the_token_and_replays_only_that_failure(site: Site) -> None:
    run = letters()
    ids, signature = failing_rows(site, run, 4, secret="fine")
    other, other_signature = failing_rows(site, letters(), 1, secret="fine")
    body = {"service": "agent", "signature": signature}
    assert site.requeue(body, token=None).status == 401
    assert site.requeue(body, token=TOKEN + "x").status == 403
    assert group_of(site, signature)["count"] == 4  # type: ignore[index]

    reply = site.requeue(body)
    assert reply.status == 200, reply.body
    doc = reply.json()
    assert doc["requeued"] == ids and doc["count"] == 4 and doc["signature"] == signature
    assert doc["scan_cut"] is False and doc["scanned"] >= 5
    site.wait_status("agent", ids, Status.CONSUMED)
    assert site.status("agent", other[0]) == Status.DEAD
    assert group_of(site, signature) is None and group_of(site, other_signature) is not None
    again = site.requeue(body).json()
    assert again["count"] == 0 and again["requeued"] == []
    assert "requeue of service agent by" in site.worker.log()


@pytest.mark.parametrize(
    ("query", "complaint"),
    [
        ("", "service is required"),
        ("service=nope", "unknown service 'nope'"),
        ("service=notification", "not served here"),
        ("service=agent&limit=0", "limit must be between 1 and 500"),
        ("service=agent&limit=many", "limit must be an integer"),
    ],
)
def test_groups_refuse_bad_input_with_400(site: Site, query: str, complaint: str) -> None:
    reply = site.get(f"/outbox/dead/groups/?{query}")
    assert reply.status == 400 and complaint in reply.error, reply.body


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        ({"service": "agent", "signature": ""}, "signature must be a non-empty string"),
        ({"service": "agent", "signature": 7}, "signature must be a non-empty string"),
        ({"service": "agent", "signature": "x" * 501}, "signature must be at most 500"),
        ({"signature": "boom"}, "service is required"),
        ({"service": "agent", "signature": "boom", "all": True}, "exactly one of"),
        ({"service": "nope", "signature": "boom"}, "unknown service 'nope'"),
    ],
)
def test_requeue_by_signature_refuses_bad_input_with_400(
    site: Site, body: Any, complaint: str
) -> None:
    reply = site.requeue(body)
    assert reply.status == 400 and complaint in reply.error, reply.body


# -- what a token opens, and lag -------------------------------------------------------------
def test_access_says_what_a_token_opens(site: Site) -> None:
    def access(**headers: str) -> dict[str, Any]:
        reply = site.get("/outbox/api/access/", **headers)
        assert reply.status == 200, reply.body
        return dict(reply.json())

    assert access() == {"payloads": False, "admin": False, "admin_enabled": True}
    assert access(**{"X-Outbox-Read-Token": READ_TOKEN})["payloads"] is True
    assert access(**{"X-Outbox-Read-Token": READ_TOKEN})["admin"] is False
    both = {"X-Outbox-Read-Token": TOKEN, "X-Outbox-Admin-Token": TOKEN}
    assert access(**both) == {"payloads": True, "admin": True, "admin_enabled": True}
    assert access(**{"X-Outbox-Read-Token": "guess"}) == access()
    assert "a token that opens nothing was tried" in site.worker.log()


def test_lag_comes_from_the_broker_for_every_served_topic(site: Site) -> None:
    doc = wait_for(
        lambda: (d := site.get("/outbox/lag/").json()) and not d["stale"] and d, 60, "lag"
    )
    assert sorted(doc["services"]) == SERVICES and doc["error"] is None
    for service, lag in doc["services"].items():
        assert lag["topic"].endswith(f"outbox.{service}") and not lag["missing"]
        assert lag["total"] == sum(p["lag"] for p in lag["partitions"]) >= 0
        for p in lag["partitions"]:
            assert p["end"] >= (p["committed"] or 0)
    assert b"payload" not in site.get("/outbox/lag/").body
    assert site.request("POST", "/outbox/lag/").status == 405


# -- one message -----------------------------------------------------------------------------
def test_message_endpoint_shows_any_row_and_checks_its_inputs(site: Site) -> None:
    row_id = chat(site.engine, "hello")
    site.wait_status("agent", [row_id], Status.CONSUMED)
    doc = site.get(f"/outbox/messages/agent/{row_id}/", **ADMIN).json()
    assert doc["status"] == "consumed" and doc["consumed_at"].endswith("Z")
    assert doc["payload"]["message"] == "hello"
    assert doc["traceparent"].startswith("00-")

    missing = site.get("/outbox/messages/agent/999999999/", **ADMIN)
    assert missing.status == 404 and "no outbox row 999999999" in missing.error
    for path, complaint in [
        ("/outbox/messages/agent/abc/", "id must be an integer"),
        ("/outbox/messages/agent/0/", "id must be between 1"),
        ("/outbox/messages/agent/-3/", "id must be an integer"),
        ("/outbox/messages/nope/1/", "unknown service 'nope'"),
        ("/outbox/messages/notification/1/", "not served here"),
        ("/outbox/messages/agent/9223372036854775808/", "id must be between 1"),
    ]:
        reply = site.get(path, **ADMIN)
        assert (reply.status, complaint in reply.error) == (400, True), (path, reply.body)


# -- requeue and its token -------------------------------------------------------------------
def agent_payload(n: int) -> dict[str, Any]:
    return {"user_id": 3, "conversation_id": "c-requeue", "role": "user", "message": f"m{n}"}


def test_requeue_without_a_token_is_401_and_with_a_wrong_one_403_and_changes_nothing(
    site: Site,
) -> None:
    [row_id] = dead_rows(site, "agent", "chat_history.persist", [agent_payload(0)])
    before = site.store("agent").get(row_id)

    missing = site.requeue({"service": "agent", "id": row_id}, token=None)
    assert missing.status == 401 and "X-Outbox-Admin-Token" in missing.error
    wrong = site.requeue({"service": "agent", "id": row_id}, token=TOKEN + "x")
    assert wrong.status == 403 and wrong.error == "wrong admin token"
    also_wrong = site.requeue({"service": "agent", "all": True}, token="")
    assert also_wrong.status == 401
    # Auth comes first: a caller without the token learns nothing about the inputs.
    assert site.requeue(b"not json", token="nope").status == 403

    assert site.store("agent").get(row_id) == before  # same status, attempts, updated_at
    assert TOKEN not in site.worker.log()  # refused tokens are not logged, nor the real one


def test_requeue_one_id_replays_it_safely(site: Site) -> None:
    [row_id] = dead_rows(site, "agent", "chat_history.persist", [agent_payload(1)])
    reply = site.requeue({"service": "agent", "id": row_id})
    assert reply.status == 200, reply.body
    assert reply.json() == {
        "service": "agent",
        "requeued": [row_id],
        "count": 1,
        "skipped": [],
        "not_dead": {},
        "unknown": [],
    }
    site.wait_status("agent", [row_id], Status.CONSUMED)
    row = site.store("agent").get(row_id)
    assert row is not None and row.retry_count == 0 and row.last_error is None


def test_requeue_a_list_skips_ids_that_are_not_dead(site: Site) -> None:
    ids = dead_rows(site, "agent", "chat_history.persist", [agent_payload(n) for n in (2, 3)])
    consumed = chat(site.engine, "already done")
    site.wait_status("agent", [consumed], Status.CONSUMED)
    reply = site.requeue({"service": "agent", "ids": [*ids, consumed, 987654321]})
    assert reply.status == 200, reply.body
    doc = reply.json()
    assert doc["requeued"] == ids and doc["skipped"] == [consumed, 987654321]
    assert doc["not_dead"] == {str(consumed): "consumed"} and doc["unknown"] == [987654321]
    site.wait_status("agent", ids, Status.CONSUMED)


def test_requeue_every_dead_row_of_an_event_type_or_service(site: Site) -> None:
    by_type = dead_rows(site, "agent", "chat_history.persist", [agent_payload(n) for n in (4, 5)])
    reply = site.requeue({"event_type": "chat_history.persist"})  # the service is implied
    assert reply.status == 200, reply.body
    assert reply.json()["service"] == "agent"
    assert set(by_type) <= set(reply.json()["requeued"])
    site.wait_status("agent", by_type, Status.CONSUMED)

    everything = dead_rows(site, "agent", "chat_history.persist", [agent_payload(6)])
    reply = site.requeue({"service": "agent", "all": True})
    assert reply.status == 200, reply.body
    assert set(everything) <= set(reply.json()["requeued"])
    site.wait_status("agent", everything, Status.CONSUMED)


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        (b"not json", "JSON object"),
        ([1, 2], "JSON object"),
        ({"service": "agent"}, "exactly one of"),
        ({"service": "agent", "id": 1, "all": True}, "exactly one of"),
        ({"service": "agent", "id": "12"}, "integers between 1 and"),
        ({"service": "agent", "id": 0}, "integers between 1 and"),
        ({"service": "agent", "id": 1.5}, "integers between 1 and"),
        ({"service": "agent", "ids": [1, True]}, "integers between 1 and"),
        ({"service": "agent", "id": 2**63}, "integers between 1 and 9223372036854775807"),
        ({"service": "agent", "ids": [1, 2**64]}, "integers between 1 and"),
        (b"[" * 100_000 + b"]" * 100_000, "JSON object"),  # deeper than Python recurses
        ({"service": "agent", "ids": []}, "non-empty list"),
        ({"service": "agent", "ids": list(range(1, 1002))}, "at most 1000"),
        ({"service": "agent", "all": "yes"}, "all must be true"),
        ({"service": "agent", "all": True, "force": True}, "unknown field(s) force"),
        ({"all": True}, "service is required"),
        ({"service": "nope", "all": True}, "unknown service 'nope'"),
        ({"service": "notification", "all": True}, "not served here"),
        ({"service": 5, "all": True}, "service must be a non-empty string"),
        ({"event_type": "no.such"}, "unknown event type"),
        ({"service": "agent", "event_type": "task.created"}, "belongs to service 'task'"),
    ],
)
def test_requeue_refuses_bad_input_with_400(site: Site, body: Any, complaint: str) -> None:
    reply = site.requeue(body)
    assert reply.status == 400, reply.body
    assert complaint in reply.error


def test_requeue_is_post_only(site: Site) -> None:
    assert site.get("/outbox/dead/requeue/").status == 405


@pytest.fixture(scope="module")
def tokenless(tmp_path_factory: pytest.TempPathFactory, broker: TestBroker) -> Iterator[Site]:
    """A worker with no OUTBOX_ADMIN_TOKEN (its own database and service)."""
    url, drop = fresh_mariadb_database("outbox_web_off")
    site = start_site(tmp_path_factory.mktemp("tokenless"), broker, url, OUTBOX_SERVICES="memory")
    try:
        yield site
    finally:
        site.worker.stop()
        site.engine.dispose()
        drop()


def test_without_a_configured_token_mutating_endpoints_are_off(tokenless: Site) -> None:
    [row_id] = dead_rows(
        tokenless, "memory", "memory.upsert", [{"user_id": 1, "key": "a", "value": "b"}]
    )
    for token in (None, "", "anything", TOKEN):
        reply = tokenless.requeue({"service": "memory", "id": row_id}, token=token)
        assert reply.status == 403, (token, reply.body)
        assert "OUTBOX_ADMIN_TOKEN is not set" in reply.error
    assert tokenless.status("memory", row_id) == Status.DEAD
    assert tokenless.get("/outbox/dead/").json()["items"][0]["id"] == row_id  # reading works
    page = tokenless.get("/outbox/").body.decode()
    assert '"admin_enabled": false' in page


# -- the dashboard and its assets ------------------------------------------------------------
def test_dashboard_is_served_with_its_own_assets_only(site: Site) -> None:
    reply = site.get("/outbox/")
    assert reply.status == 200 and reply.headers["Content-Type"].startswith("text/html")
    csp = reply.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "connect-src 'self'" in csp
    page = reply.body.decode()
    assert TOKEN not in page
    assert '"admin_enabled": true' in page
    assert "http://" not in page and "https://" not in page  # no CDN
    for name, kind in [
        ("chart.js", "text/javascript"),
        ("common.js", "text/javascript"),
        ("dead.js", "text/javascript"),
        ("panels.js", "text/javascript"),
        ("dashboard.js", "text/javascript"),
        ("dashboard.css", "text/css"),
        ("favicon.svg", "image/svg+xml"),
    ]:
        assert f"/outbox/static/{name}" in page
        asset = site.get(f"/outbox/static/{name}")
        assert asset.status == 200 and asset.headers["Content-Type"].startswith(kind), name
        assert b"https://" not in asset.body and b"http://" not in asset.body.replace(
            b'xmlns="http://www.w3.org/2000/svg"', b""
        ), name
    assert site.get("/outbox/static/views.py").status == 404
    assert site.get("/outbox/static/..%2Fviews.py").status == 404


def test_dashboard_root_without_slash_redirects(site: Site) -> None:
    req = urllib.request.Request(f"http://127.0.0.1:{site.port}/outbox")
    with urllib.request.urlopen(req, timeout=10) as r:  # follows the redirect
        assert r.geturl().endswith("/outbox/") and r.status == 200


def test_series_gives_samples_with_rates_for_the_charts(site: Site) -> None:
    first = site.get("/outbox/api/series/").json()
    assert sorted(first["stats"]["services"]) == SERVICES
    ids = [chat(site.engine, f"series {n}") for n in range(20)]
    site.wait_status("agent", ids, Status.CONSUMED)

    # A sample is taken at most about once a second, and the consumer adds its latencies
    # just after its commit: wait for a sample after the work that holds them.
    def measured_since_first() -> Any:
        doc = site.get(f"/outbox/api/series/?since={first['now']}").json()
        done = any(p["services"]["agent"]["latency_p50_ms"] is not None for p in doc["points"])
        return done and doc["now"] > first["now"] + 1 and doc

    later = wait_for(measured_since_first, 10, "a newer sample with latencies")
    assert all(p["t"] > first["now"] for p in later["points"])
    point = later["points"][-1]["services"]["agent"]
    assert {"published_rate", "consume_rate", "pending", "consumed"} <= set(point)
    assert {"latency_p50_ms", "latency_p99_ms"} <= set(point) and "publish_rate" not in point
    consumed_between = sum((p["services"]["agent"]["consume_rate"] or 0) for p in later["points"])
    assert consumed_between > 0
    # This worker consumed the 20: some sample since holds their end-to-end percentiles.
    measured = [
        p["services"]["agent"]
        for p in later["points"]
        if p["services"]["agent"]["latency_p50_ms"] is not None
    ]
    assert measured, later["points"]
    for m in measured:
        assert 0 < m["latency_p50_ms"] <= m["latency_p99_ms"] < 60_000
    assert site.get("/outbox/api/series/?since=soon").status == 400


# -- prometheus -------------------------------------------------------------------------------
def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(metrics: dict[Any, float], name: str, **labels: str) -> float | None:
    return metrics.get((name, tuple(sorted(labels.items()))))


def test_metrics_after_a_known_workload(site: Site) -> None:
    before = samples(site.get("/metrics").body.decode())
    # Every served service's series exist from the start, at zero (task is untouched so far).
    for name in ("outbox_published_total", "outbox_consumed_total", "outbox_dead_total"):
        assert value(before, name, service="task") == 0, name
    assert value(before, "outbox_end_to_end_latency_seconds_count", service="task") == 0

    run = uuid.uuid4().hex[:6]
    with Session(site.engine) as session, session.begin():
        for n in range(5):
            publish(
                session,
                "task.created",
                {"task_id": f"t-{run}-{n}", "user_id": 1, "title": "metrics"},
                key=f"t-{run}-{n}",
            )
        # No such task: the handler fails, and with one attempt allowed the row is dead.
        failing = publish(
            session,
            "task.completed",
            {"task_id": f"missing-{run}", "user_id": 1, "notify": False},
            key=f"missing-{run}",
            max_retry=1,
        )
    site.wait_status("task", [failing], Status.DEAD)
    wait_for(lambda: site.stats()["task"]["consumed"] == 5, 30, "five tasks consumed")
    # A counter moves just after its transaction commits (the relay's after its mark), so
    # the rows can be final a moment before the counters are: wait for them, then read.
    settled = {"outbox_published_total": 6, "outbox_consumed_total": 5, "outbox_dead_total": 1}

    def counters_settled() -> bool:
        now = samples(site.get("/metrics").body.decode())
        return all(value(now, name, service="task") == n for name, n in settled.items())

    wait_for(counters_settled, 30, f"the task counters to reach {settled}")

    reply = site.get("/metrics")
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    m = samples(reply.body.decode())
    assert value(m, "outbox_rows", service="task", status="consumed") == 5
    assert value(m, "outbox_rows", service="task", status="dead") == 1
    assert value(m, "outbox_rows", service="task", status="pending") == 0
    assert value(m, "outbox_rows", service="task", status="published") == 0
    assert value(m, "outbox_oldest_pending_age_seconds", service="task") == 0
    assert value(m, "outbox_published_total", service="task") == 6
    assert value(m, "outbox_consumed_total", service="task") == 5
    assert value(m, "outbox_handler_failures_total", service="task") == 1
    assert value(m, "outbox_dead_total", service="task") == 1
    assert value(m, "outbox_publish_failures_total", service="task") == 0
    assert value(m, "outbox_stale_recovered_total", service="task") == 0
    batches = value(m, "outbox_relay_batch_size_count", service="task")
    assert batches is not None and 1 <= batches <= 6
    assert value(m, "outbox_relay_batch_size_sum", service="task") == 6
    assert value(m, "outbox_publish_latency_seconds_count", service="task") == batches
    assert value(m, "outbox_end_to_end_latency_seconds_count", service="task") == 5
    e2e = value(m, "outbox_end_to_end_latency_seconds_sum", service="task")
    assert e2e is not None and 0 < e2e < 5 * 30
    inf = value(m, "outbox_end_to_end_latency_seconds_bucket", service="task", le="+Inf")
    assert inf == 5
    # Every service this worker serves has its row gauges, even one with no traffic.
    for service in SERVICES:
        for status in ("pending", "published", "consumed", "dead"):
            assert value(m, "outbox_rows", service=service, status=status) is not None


def test_metrics_speak_openmetrics_when_asked(site: Site) -> None:
    reply = site.get("/metrics", Accept="application/openmetrics-text; version=1.0.0")
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("application/openmetrics-text")
    assert reply.body.rstrip().endswith(b"# EOF")
    assert b"outbox_rows{" in reply.body


def test_nothing_secret_reaches_pages_or_the_log(site: Site) -> None:
    for path in (
        "/outbox/",
        "/outbox/stats/",
        "/outbox/api/series/",
        "/metrics",
        "/outbox/lag/",
        "/outbox/dead/groups/?service=agent",
        "/outbox/api/access/",
    ):
        body = site.get(path, **ADMIN).body
        assert TOKEN.encode() not in body and READ_TOKEN.encode() not in body, path
    assert TOKEN not in site.worker.log() and READ_TOKEN not in site.worker.log()
