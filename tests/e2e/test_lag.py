"""Consumer lag from the broker, through a real worker: ``GET /outbox/lag/`` and the
``outbox_consumer_lag`` gauge grow while the consumer is held back (a handler that waits
at a gate file, so its partition stops), fall to zero once it caught up, are served from
a cache however many ask, and while the broker is away answer with the last value marked
stale. The last test takes the suite's broker down (SIGKILL) and brings it back."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from outbox_app.records import Status
from tests.conftest import fresh_mariadb_database
from tests.e2e.helpers import Stack, publish_many, wait_status
from tests.support import TestBroker, Worker, port_open, wait_for

pytestmark = pytest.mark.timeout(400)


class Site:
    def __init__(self, stack: Stack, worker: Worker) -> None:
        self.stack, self.worker = stack, worker
        self.port = int(worker.env["OUTBOX_WEB_PORT"])

    def get(self, path: str) -> Any:
        url = f"http://127.0.0.1:{self.port}{path}"
        with urllib.request.urlopen(url, timeout=30) as r:
            body = r.read()
        return body.decode() if path == "/metrics" else json.loads(body)

    def lag(self) -> dict[str, Any]:
        doc: dict[str, Any] = self.get("/outbox/lag/")
        return doc

    def gauge(self) -> dict[str, float]:
        return {
            s.labels["partition"]: s.value
            for family in text_string_to_metric_families(self.get("/metrics"))
            for s in family.samples
            if s.name == "outbox_consumer_lag" and s.labels.get("service") == "flaky"
        }


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, broker: TestBroker) -> Iterator[Site]:
    url, drop = fresh_mariadb_database("outbox_lag")
    stack = Stack(tmp_path_factory.mktemp("lag"), broker, url)
    try:
        worker = stack.worker("flaky", OUTBOX_ADMIN_TOKEN="lag-admin-token")
        site = Site(stack, worker)
        wait_for(lambda: port_open(site.port), 60, "the web view")
        (probe,) = publish_many(stack.engine, [("flaky.ok", {"i": 0}, "probe")])
        wait_status(stack, "flaky", probe, Status.CONSUMED, 90)  # the group has joined
        yield site
    finally:
        stack.close()
        drop()


def fresh_total(site: Site) -> int | None:
    doc = site.lag()
    return None if doc["stale"] else int(doc["services"]["flaky"]["total"])


def test_lag_grows_while_the_consumer_is_held_and_is_zero_once_it_caught_up(
    site: Site, tmp_path: Path
) -> None:
    wait_for(lambda: fresh_total(site) == 0, 60, "no lag before the test")
    doc = site.lag()
    flaky = doc["services"]["flaky"]
    assert flaky["topic"] == site.stack.topic("flaky")  # OUTBOX_TOPIC_PREFIX applied
    assert doc["group"] == site.stack.prefix + "outbox-flaky"  # the worker's own group
    assert len(flaky["partitions"]) == 4 and doc["error"] is None

    gate = tmp_path / "gate"
    gate.write_text("closed")
    n = 6
    # One key: one partition, whose batch waits at the gate; nothing after it is committed.
    ids = publish_many(site.stack.engine, [("flaky.gated", {"gate": str(gate)}, "held")] * n)
    try:
        held = wait_for(
            lambda: (d := site.lag())["services"]["flaky"]["total"] == n and not d["stale"] and d,
            60,
            f"a lag of {n}",
        )
        behind = [p for p in held["services"]["flaky"]["partitions"] if p["lag"]]
        assert len(behind) == 1 and behind[0]["lag"] == n
        # A partition the group never committed on is read from its first record (0 here).
        assert behind[0]["end"] - (behind[0]["committed"] or 0) == n
        gauge = wait_for(lambda: (g := site.gauge()) and sum(g.values()) == n and g, 30, "gauge")
        assert gauge[str(behind[0]["partition"])] == n
        assert all(site.stack.store("flaky").get(i).status != Status.CONSUMED for i in ids)
    finally:
        gate.unlink()
    for i in ids:
        wait_status(site.stack, "flaky", i, Status.CONSUMED, 60)
    caught_up = wait_for(
        lambda: (d := site.lag())["services"]["flaky"]["total"] == 0 and not d["stale"] and d,
        60,
        "the lag to be 0 again",
    )
    for p in caught_up["services"]["flaky"]["partitions"]:
        assert p["lag"] == 0 and (p["committed"] is None or p["committed"] == p["end"])
    wait_for(lambda: sum(site.gauge().values()) == 0, 30, "the gauge to be 0 again")


def test_many_callers_share_the_cached_broker_answer(site: Site) -> None:
    started = time.monotonic()
    with ThreadPoolExecutor(16) as pool:
        docs = list(pool.map(lambda _: site.lag(), range(64)))
    elapsed = time.monotonic() - started
    answers = {d["as_of"] for d in docs}
    # At most one broker query every 2 s, however many ask (plus the one under way).
    assert len(answers) <= elapsed / 2.0 + 2, (len(answers), elapsed)
    assert all(d["services"]["flaky"]["partitions"] for d in docs)


def test_while_the_broker_is_down_the_last_value_is_served_stale(site: Site) -> None:
    last = wait_for(lambda: (d := site.lag()) and not d["stale"] and d, 60, "a fresh answer")
    site.stack.broker.down()
    try:
        # A send that fails tells the worker's health (the dashboard's badge) too.
        (during,) = publish_many(site.stack.engine, [("flaky.ok", {"i": 1}, "outage")])
        stale = wait_for(
            lambda: (d := site.lag())["stale"] and d["error"] and d, 90, "a stale lag answer"
        )
        assert stale["services"] == last["services"]  # the last value, not nothing
        assert stale["as_of"] >= last["as_of"] and stale["age_s"] > 0
        health = wait_for(
            lambda: (
                (h := site.get("/outbox/api/series/")["health"]["broker"]) and not h["up"] and h
            ),
            90,
            "the broker to be reported down",
        )
        assert health["down_since"] is not None and health["reason"]
        assert site.gauge() == {}  # no stale number on /metrics
    finally:
        site.stack.broker.up()
    wait_for(lambda: fresh_total(site) is not None, 120, "a fresh lag answer again")
    wait_status(site.stack, "flaky", during, Status.CONSUMED, 120)
    wait_for(lambda: fresh_total(site) == 0, 60, "no lag after the outage")
    assert "lag-admin-token" not in site.worker.log()
