"""The dashboard in a real browser: headless Chromium (Debian's, driven by selenium and
/usr/bin/chromedriver) loads /outbox/ from a worker under live traffic, the charts
draw, requeue works once the admin token is entered, and the counts on the page match
/outbox/stats/. A screenshot is saved in the test's tmp dir."""

from __future__ import annotations

import json
import os
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from outbox_app import Status, default_registry, publish
from outbox_app.database import make_engine
from outbox_app.schema import create_schema
from outbox_app.store import OutboxStore
from tests.conftest import fresh_mariadb_database
from tests.support import TestBroker, Worker, port_open, unique_prefix, wait_for, worker_env

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.browser,
    pytest.mark.skipif(
        not os.path.exists(CHROMIUM),
        reason=f"{CHROMIUM} is not installed (apt-get install chromium chromium-driver)",
    ),
]

TOKEN = "browser-token-" + uuid.uuid4().hex[:8]
SERVICES = ["agent", "memory", "task"]
STATUSES = ["pending", "published", "consumed", "dead"]


class Traffic(threading.Thread):
    """Business transactions at a steady pace on three services until stopped."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(daemon=True)
        self.engine = engine
        self.stopping = threading.Event()
        self.sent = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        run = uuid.uuid4().hex[:6]
        n = 0
        try:
            while not self.stopping.is_set():
                with Session(self.engine) as session, session.begin():
                    for _ in range(3):
                        n += 1
                        chat = {"user_id": n % 5, "conversation_id": f"c{n % 7}", "role": "user"}
                        publish(
                            session,
                            "chat_history.persist",
                            {**chat, "message": f"m{n}"},
                            key=f"c{n % 7}",
                        )
                        memory = {"user_id": n % 5, "key": f"k{n % 11}", "value": str(n)}
                        publish(session, "memory.upsert", memory, key=str(n % 5))
                    task = {"task_id": f"{run}-{n}", "user_id": 1, "title": f"task {n}"}
                    publish(session, "task.created", task, key=task["task_id"])
                self.sent += 7
                self.stopping.wait(0.1)  # pacing of the load, not synchronisation
        except Exception as exc:  # noqa: BLE001 - handed to the test by stop()
            self.error = exc

    def stop(self) -> None:
        self.stopping.set()
        self.join(30)
        assert self.error is None, self.error


@dataclass
class Site:
    port: int
    engine: Engine
    worker: Worker

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.base}/outbox/stats/", timeout=10) as r:
            return dict(json.loads(r.read())["services"])

    def store(self, service: str) -> OutboxStore:
        return OutboxStore(self.engine, default_registry.route(service))


@pytest.fixture
def site(tmp_path: Path, broker: TestBroker) -> Iterator[Site]:
    default_registry.load_modules(["handlers"])
    url, drop = fresh_mariadb_database("outbox_browser")
    engine = make_engine(url)
    create_schema(engine, default_registry.routes(), default_registry.metadata)
    env = worker_env(
        url, broker, unique_prefix(), OUTBOX_SERVICES=",".join(SERVICES), OUTBOX_ADMIN_TOKEN=TOKEN
    )
    worker = Worker(env, tmp_path / "worker.log").start()
    site = Site(int(env["OUTBOX_WEB_PORT"]), engine, worker)
    try:
        wait_for(lambda: port_open(site.port), 60, "the web view")
        yield site
    finally:
        worker.stop()
        engine.dispose()
        drop()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--window-size=1440,2000",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


# Counts a canvas's painted pixels, and those close to a colour (its line).
PIXELS_JS = """
const [id, rgb] = arguments;
const c = document.getElementById(id);
if (!c || !c.width) return null;
const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
let painted = 0, colour = 0;
for (let i = 0; i < data.length; i += 4) {
  if (data[i + 3] > 0) painted++;
  if (data[i + 3] > 200 && Math.abs(data[i] - rgb[0]) < 40 && Math.abs(data[i + 1] - rgb[1]) < 40
      && Math.abs(data[i + 2] - rgb[2]) < 40) colour++;
}
return {painted, colour, total: data.length / 4, points: Number(c.dataset.points || 0)};
"""

COUNTS_JS = """
const out = {};
for (const node of document.querySelectorAll('[data-count]')) {
  out[node.dataset.count] = node.dataset.value === undefined ? null : Number(node.dataset.value);
}
return out;
"""

CONSUMED_GREEN = (16, 185, 129)
PENDING_AMBER = (245, 158, 11)


def dead_on_arrival(site: Site, payload: dict[str, Any]) -> int:
    store = site.store("agent")
    with site.engine.begin() as conn:
        row_id = store.add(
            conn,
            event_type="chat_history.persist",
            payload_json=json.dumps(payload),
            key="doa",
            max_retry=5,
        )
        store.mark_dead({row_id: "test: the downstream database was read-only"}, conn)
    return row_id


@pytest.mark.timeout(300)
def test_dashboard_renders_live_charts_and_matches_stats(
    site: Site, browser: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    # Dead letters to look at: two from a handler that refuses them, one worth replaying.
    with Session(site.engine) as session, session.begin():
        for n in range(2):
            bad = {"user_id": 9, "conversation_id": "c-bad", "role": "robot", "message": f"b{n}"}
            publish(session, "chat_history.persist", bad, key="c-bad", max_retry=1)
    replay = dead_on_arrival(
        site, {"user_id": 9, "conversation_id": "c-ok", "role": "user", "message": "again"}
    )
    traffic = Traffic(site.engine)
    traffic.start()
    try:
        browser.get(f"{site.base}/outbox/")
        assert "Outbox" in browser.title

        # Live: successive polls draw more and more samples on every chart.
        def charts_drawn() -> dict[str, Any] | None:
            found = {}
            for service in SERVICES:
                for kind in ("rate", "backlog"):
                    px = browser.execute_script(PIXELS_JS, f"chart-{kind}-{service}", [0, 0, 0])
                    if not px or px["points"] < 8:
                        return None
                    found[f"{kind}-{service}"] = px
            return found

        drawn = wait_for(charts_drawn, 90, "every chart to draw at least 8 samples")
        for name, px in drawn.items():
            assert px["painted"] > 0.02 * px["total"], (name, px)  # grid, axes and lines
        # Traffic shows as a green line, once the worker consumes (a wait, not a race).
        wait_for(
            lambda: (
                browser.execute_script(PIXELS_JS, "chart-rate-agent", list(CONSUMED_GREEN))[
                    "colour"
                ]
                > 100
            ),
            60,
            "the consume rate to show as a green line",
        )
        wait_for(
            lambda: (
                int(
                    browser.find_element(
                        By.CSS_SELECTOR, '[data-count="all:consumed"]'
                    ).get_attribute("data-value")
                    or 0
                )
                > 50
            ),
            60,
            "consumed counts to climb",
        )

        # Dead letters are listed with their errors; requeue needs the token first.
        wait_for(
            lambda: (
                len(browser.find_elements(By.CSS_SELECTOR, '[data-dead-rows="agent"] tr.dead-row'))
                >= 3
            ),
            60,
            "three dead letters in the agent table",
        )
        table = browser.find_element(By.CSS_SELECTOR, '[data-dead-rows="agent"]').text
        assert "must be one of user, assistant, system, tool, got 'robot'" in table
        assert "read-only" in table
        requeue = browser.find_element(By.CSS_SELECTOR, '[data-requeue-selected="agent"]')
        assert not requeue.is_enabled()
        browser.find_element(By.ID, "admin-token").send_keys(TOKEN)
        browser.find_element(By.ID, "admin-use").click()
        wait_for(requeue.is_enabled, 10, "the requeue button to be enabled")
        assert browser.find_element(By.ID, "admin-token").get_attribute("value") == ""
        browser.find_element(
            By.CSS_SELECTOR, f'tr[data-dead-id="{replay}"] input[type=checkbox]'
        ).click()
        requeue.click()
        toast = browser.find_element(By.ID, "toast")
        wait_for(
            lambda: toast.is_displayed() and "Requeued 1 row of agent" in toast.text,
            10,
            "the toast",
        )
        wait_for(
            lambda: site.store("agent").get(replay).status == Status.CONSUMED,
            30,
            "the requeued row to be consumed",
        )
    finally:
        traffic.stop()

    # Once the traffic stops, the page settles on exactly what /outbox/stats/ says.
    def settled() -> bool:
        stats = site.stats()
        if any(c["pending"] or c["published"] for c in stats.values()):
            return False
        shown = browser.execute_script(COUNTS_JS)
        expected = {f"{s}:{k}": stats[s][k] for s in SERVICES for k in STATUSES}
        expected.update({f"all:{k}": sum(stats[s][k] for s in SERVICES) for k in STATUSES})
        return shown == expected and site.stats() == stats

    wait_for(settled, 60, "the dashboard counts to match /outbox/stats/")
    stats = site.stats()
    assert stats["agent"]["dead"] == 2  # the two robots; the replayed row was consumed
    assert sum(stats[s]["consumed"] for s in SERVICES) >= traffic.sent
    assert browser.find_element(By.CSS_SELECTOR, '[data-health="agent"]').text == "2 dead"
    assert browser.find_element(By.CSS_SELECTOR, '[data-health="memory"]').text == "healthy"
    assert TOKEN not in browser.page_source

    severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert severe == []  # no script errors, no blocked (CSP) or missing resources

    wait_for(lambda: not browser.find_element(By.ID, "toast").is_displayed(), 10, "the toast to go")
    # The whole page and no more: the window's size includes its frame, the page's not.
    page, frame = browser.execute_script(
        "return [document.body.scrollHeight, window.outerHeight - window.innerHeight]"
    )
    browser.set_window_size(1440, min(max(page, 900), 4000) + frame)
    browser.execute_script("window.scrollTo(0, 0)")
    shot = tmp_path / "dashboard.png"
    assert browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 20_000
    print(f"dashboard screenshot: {shot}")
