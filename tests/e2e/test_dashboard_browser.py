"""The dashboard in a real browser: headless Chromium (Debian's, driven by selenium and
/usr/bin/chromedriver) loads /outbox/ from a worker under live traffic, the charts
draw (throughput, backlog, end-to-end latency), the incident panels fill (health badge,
dead letters grouped by failure, consumer lag, blocked keys of an ordered service),
payloads show and requeue works once a token is entered, a failure group and a blocked
key's head are dealt with from the page, and the counts on the page match
/outbox/stats/. Screenshots are saved in the test's tmp dir, and checked."""

from __future__ import annotations

import base64
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
SERVICES = ["agent", "memory", "task", "steps"]  # steps: ordered per key (flaky_handlers)
TRAFFIC = ["agent", "memory", "task"]
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
        url,
        broker,
        unique_prefix(),
        OUTBOX_SERVICES=",".join(SERVICES),
        OUTBOX_ADMIN_TOKEN=TOKEN,
        OUTBOX_HANDLER_MODULES="handlers,tests.e2e.flaky_handlers",
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

# Decodes a screenshot (base64 PNG) in the page and counts, in each rectangle (CSS px of
# the page), the pixels close to a colour: what the saved image shows, not what the DOM says.
SHOT_JS = """
const [b64, boxes, done] = arguments;
const img = new Image();
img.onload = () => {
  const c = document.createElement('canvas');
  c.width = img.width; c.height = img.height;
  const ctx = c.getContext('2d');
  ctx.drawImage(img, 0, 0);
  const scale = img.width / document.documentElement.clientWidth;
  done(boxes.map(([x, y, w, h, rgb]) => {
    const d = ctx.getImageData(Math.round(x * scale), Math.round(y * scale),
                               Math.max(1, Math.round(w * scale)), Math.max(1, Math.round(h * scale))).data;
    let n = 0;
    for (let i = 0; i < d.length; i += 4) {
      if (Math.abs(d[i] - rgb[0]) < 40 && Math.abs(d[i + 1] - rgb[1]) < 40
          && Math.abs(d[i + 2] - rgb[2]) < 40) n++;
    }
    return n;
  }));
};
img.onerror = () => done(null);
img.src = 'data:image/png;base64,' + b64;
"""

RECT_JS = """
const r = document.querySelector(arguments[0]).getBoundingClientRect();
return [r.left + window.scrollX, r.top + window.scrollY, r.width, r.height];
"""

# One element's state, read in a single script turn: a panel's refresh cannot replace the
# element between finding it and reading it, as it can between two WebDriver calls.
LOOK_JS = """
const el = document.querySelector(arguments[0]);
if (!el) return null;
const attrs = {};
for (const a of el.attributes) attrs[a.name] = a.value;
const style = getComputedStyle(el);
return {
  text: el.innerText, attrs,
  enabled: !el.disabled, selected: !!el.checked,
  displayed: !el.hidden && style.display !== 'none' && el.getClientRects().length > 0,
  value: el.value === undefined ? null : String(el.value),
};
"""

GROUPS_JS = """
const out = {};
for (const r of document.querySelectorAll('[data-groups-rows="agent"] tr.group-row')) {
  out[r.dataset.signature] = Number(r.dataset.groupCount);
}
return out;
"""


def look(browser: Any, selector: str) -> dict[str, Any]:
    """The element matching ``selector`` as it is now (text, attributes, enabled, selected,
    displayed, value); an empty dict when there is none."""
    return browser.execute_script(LOOK_JS, selector) or {}


def text(browser: Any, selector: str) -> str:
    return str(look(browser, selector).get("text", ""))


def attr(browser: Any, selector: str, name: str) -> str | None:
    return look(browser, selector).get("attrs", {}).get(name)


CONSUMED_GREEN = (16, 185, 129)
PENDING_AMBER = (245, 158, 11)
P50_BLUE = (14, 165, 233)
P99_PURPLE = (168, 85, 247)
BADGE_GREEN = (22, 101, 52)
BADGE_RED = (220, 38, 38)
ROBOTS = "permanent failure: field '…' must be one of user, assistant, system, tool, got '…'"
WEBHOOK = "test: webhook answered N for order '…'"
READ_ONLY = "test: the downstream database was read-only"


def dead_on_arrival(site: Site, payload: dict[str, Any], error: str = READ_ONLY) -> int:
    store = site.store("agent")
    with site.engine.begin() as conn:
        row_id = store.add(
            conn,
            event_type="chat_history.persist",
            payload_json=json.dumps(payload),
            key="doa",
            max_retry=5,
        )
        store.mark_dead({row_id: error}, conn)
    return row_id


def incident(site: Site) -> dict[str, Any]:
    """What the page is to show: two robots refused by the handler, one row worth
    replaying, three that failed alike at a webhook, and a key of the ordered service
    ``steps`` blocked behind its dead head."""
    with Session(site.engine) as session, session.begin():
        for n in range(2):
            bad = {"user_id": 9, "conversation_id": "c-bad", "role": "robot", "message": f"b{n}"}
            publish(session, "chat_history.persist", bad, key="c-bad", max_retry=1)
        head = publish(
            session, "steps.step", {"seq": 1, "fail_attempts": 9}, key="k-blocked", max_retry=1
        )
    with Session(site.engine) as session, session.begin():
        parked = [publish(session, "steps.step", {"seq": n}, key="k-blocked") for n in (2, 3)]
    ok = {"user_id": 9, "conversation_id": "c-ok", "role": "user"}
    replay = dead_on_arrival(site, {**ok, "message": "again"})
    webhook = [
        dead_on_arrival(
            site,
            {**ok, "message": f"hook {k}"},
            f"test: webhook answered {502 + k} for order 'o-{k}'",
        )
        for k in range(3)
    ]
    return {"replay": replay, "webhook": webhook, "head": head, "parked": parked}


def accept_confirm(browser: Any) -> str:
    """Accepts the page's confirm() dialog; returns its text."""
    from selenium.common.exceptions import NoAlertPresentException

    def alert() -> Any:
        try:
            return browser.switch_to.alert
        except NoAlertPresentException:
            return None

    dialog = wait_for(alert, 10, "the confirm dialog")
    text = str(dialog.text)
    dialog.accept()
    return text


def group_counts(browser: Any) -> dict[str, int]:
    return dict(browser.execute_script(GROUPS_JS))


def click(browser: Any, selector: str, what: str) -> None:
    """Click the element matching ``selector``, found again if a panel's refresh replaced
    it between finding and clicking."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    def attempt() -> bool:
        try:
            browser.find_element(By.CSS_SELECTOR, selector).click()
        except StaleElementReferenceException:
            return False
        return True

    wait_for(attempt, 10, what)


def is_stale(element: Any) -> bool:
    from selenium.common.exceptions import StaleElementReferenceException

    try:
        element.is_enabled()
    except StaleElementReferenceException:
        return True
    return False


def dead_details(browser: Any, needle: str) -> str:
    """The expanded details of the first agent dead row whose error contains ``needle``
    (the table is redrawn now and then: expand again if needed)."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    try:
        for row in browser.find_elements(By.CSS_SELECTOR, '[data-dead-rows="agent"] tr.dead-row'):
            if needle in row.text:
                details = row.find_element(By.XPATH, "following-sibling::tr[1]")
                if not details.is_displayed():
                    row.find_element(By.CSS_SELECTOR, "td.error").click()
                return str(details.text) if details.is_displayed() else ""
    except StaleElementReferenceException:
        pass
    return ""


def save_page(
    browser: Any, path: Path, checks: dict[str, tuple[str, tuple[int, int, int]]]
) -> dict[str, int]:
    """The whole page as a PNG at ``path``; for each check (a CSS selector and a colour),
    how many pixels of that colour the saved image has where the element is."""
    page, frame = browser.execute_script(
        "return [document.body.scrollHeight, window.outerHeight - window.innerHeight]"
    )
    browser.set_window_size(1440, min(max(page, 900), 6000) + frame)
    browser.execute_script("window.scrollTo(0, 0)")
    shot = browser.get_screenshot_as_base64()
    path.write_bytes(base64.b64decode(shot))
    boxes = [[*browser.execute_script(RECT_JS, sel), list(rgb)] for sel, rgb in checks.values()]
    counts = browser.execute_async_script(SHOT_JS, shot, boxes)
    assert counts is not None, "the screenshot did not decode"
    return dict(zip(checks, counts, strict=True))


@pytest.mark.timeout(360)
def test_dashboard_renders_live_charts_and_matches_stats(
    site: Site, browser: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    rows = incident(site)
    traffic = Traffic(site.engine)
    traffic.start()
    try:
        browser.get(f"{site.base}/outbox/")
        assert "Outbox" in browser.title

        # Live: successive polls draw more and more samples on every chart.
        def charts_drawn() -> dict[str, Any] | None:
            found = {}
            for service in TRAFFIC:
                for kind in ("rate", "backlog", "latency"):
                    px = browser.execute_script(PIXELS_JS, f"chart-{kind}-{service}", [0, 0, 0])
                    if not px or px["points"] < 8:
                        return None
                    found[f"{kind}-{service}"] = px
            return found

        drawn = wait_for(charts_drawn, 90, "every chart to draw at least 8 samples")
        for name, px in drawn.items():
            assert px["painted"] > 0.02 * px["total"], (name, px)  # grid, axes and lines
        # Traffic shows as a green line, once the worker consumes (a wait, not a race).
        for chart, colour, what in [
            ("chart-rate-agent", CONSUMED_GREEN, "the consume rate as a green line"),
            ("chart-latency-agent", P50_BLUE, "the p50 latency as a blue line"),
            ("chart-latency-agent", P99_PURPLE, "the p99 latency as a purple line"),
        ]:
            wait_for(
                lambda c=chart, rgb=colour: (
                    browser.execute_script(PIXELS_JS, c, list(rgb))["colour"] > 100
                ),
                60,
                what,
            )
        legend = '[data-service="agent"] [data-legend="latency_{}_ms"]'
        p50 = float(attr(browser, legend.format("p50"), "data-value") or 0)
        p99 = float(attr(browser, legend.format("p99"), "data-value") or 0)
        assert 0 < p50 <= p99, (p50, p99)
        assert "this worker's consumers" in text(browser, "#services")
        tile = look(browser, ".tile.published")
        assert tile["text"].lower().startswith("published")
        assert tile["attrs"]["title"] == "sent to Kafka, waiting for its consumer"
        assert "in flight" not in text(browser, "body").lower()
        wait_for(
            lambda: int(attr(browser, '[data-count="all:consumed"]', "data-value") or 0) > 50,
            60,
            "consumed counts to climb",
        )

        # The worker's health badge: green while broker and database answer; red, with
        # how long and why, when one does not (drawn by the page's own code from a health
        # document as the series sends it; the next poll draws the real one again).
        def badge_ok() -> bool:
            return attr(browser, "#worker-health", "data-state") == "ok"

        wait_for(badge_ok, 30, "a green badge")
        assert text(browser, "#worker-health") == "broker and database up"
        down = browser.execute_script(
            "const now = Date.now() / 1000;"
            "Outbox.panels.renderHealth({broker: {up: false, down_since: now - 42, "
            "reason: 'KafkaConnectionError: Unable to bootstrap from [127.0.0.1:9]'}, "
            "database: {up: true, down_since: null, reason: null}}, now);"
            "const b = document.getElementById('worker-health');"
            "return [b.textContent, b.dataset.state, getComputedStyle(b).backgroundColor];"
        )
        assert down == [
            "broker down for 42 s: KafkaConnectionError: Unable to bootstrap from [127.0.0.1:9]",
            "down",
            "rgb(220, 38, 38)",
        ]
        wait_for(badge_ok, 10, "the real badge back")

        # Consumer lag, from the broker, for every served topic.
        wait_for(
            lambda: attr(browser, "#lag-state", "data-state") == "fresh",
            30,
            "a fresh lag answer",
        )
        assert text(browser, "#lag-state").startswith("From the broker")
        for service in SERVICES:
            rows_shown = browser.execute_script(
                "return document.querySelectorAll(arguments[0]).length",
                f'[data-lag-rows="{service}"] tr',
            )
            assert rows_shown == 4, service  # OUTBOX_TOPIC_PARTITIONS
            assert int(attr(browser, f'[data-lag-total="{service}"]', "data-value") or -1) >= 0

        # Dead letters grouped by failure signature, without a token already.
        expected_groups = {ROBOTS: 2, WEBHOOK: 3, READ_ONLY: 1}
        wait_for(lambda: group_counts(browser) == expected_groups, 60, "the failure groups")
        groups_text = text(browser, '[data-groups-rows="agent"]')
        assert ROBOTS in groups_text and WEBHOOK in groups_text
        # The blocked key of the ordered service, with its dead head.
        blocked_row = '[data-blocked-rows="steps"] tr[data-blocked-key="k-blocked"]'
        blocked = wait_for(lambda: look(browser, blocked_row), 90, "a blocked key")
        assert blocked["attrs"]["data-head-id"] == str(rows["head"])
        assert "dead" in blocked["text"] and "fails attempt 1" in blocked["text"]
        wait_for(
            lambda: "2" in text(browser, f"{blocked_row} td:nth-child(5)"),
            30,
            "two parked rows",
        )

        # Dead letters are listed with their errors; payloads need a token, as requeue.
        wait_for(
            lambda: (
                len(browser.find_elements(By.CSS_SELECTOR, '[data-dead-rows="agent"] tr.dead-row'))
                >= 6
            ),
            60,
            "six dead letters in the agent table",
        )
        table = text(browser, '[data-dead-rows="agent"]')
        assert "must be one of user, assistant, system, tool, got 'robot'" in table
        assert "read-only" in table
        hidden = wait_for(lambda: dead_details(browser, "got 'robot'"), 10, "a row's details")
        assert "Payload hidden" in hidden and "c-bad" not in hidden
        requeue = '[data-requeue-selected="agent"]'
        assert not look(browser, requeue)["enabled"]
        assert not look(browser, "[data-requeue-group]")["enabled"]
        browser.find_element(By.ID, "admin-token").send_keys(TOKEN)
        browser.find_element(By.ID, "admin-use").click()
        wait_for(
            lambda: look(browser, requeue).get("enabled"), 10, "the requeue button to be enabled"
        )
        assert look(browser, "#admin-token")["value"] == ""
        shown = wait_for(
            lambda: (d := dead_details(browser, "got 'robot'")) and '"role": "robot"' in d and d,
            20,
            "the payload, once the token is in",
        )
        assert '"conversation_id": "c-bad"' in shown

        # The page during the incident: groups, a blocked key, payloads, the lag.
        incident_shot = tmp_path / "dashboard-incident.png"
        seen = save_page(
            browser,
            incident_shot,
            {
                "badge": ("#worker-health", BADGE_GREEN),
                "latency": ("#chart-latency-agent", P50_BLUE),
                "consumed": ("#chart-rate-agent", CONSUMED_GREEN),
            },
        )
        badge_box = browser.execute_script(RECT_JS, "#worker-health")
        assert seen["badge"] > 0.3 * badge_box[2] * badge_box[3], seen  # mostly green
        assert seen["latency"] > 50 and seen["consumed"] > 50, seen
        print(f"dashboard screenshot (incident): {incident_shot}")
        browser.set_window_size(1440, 2000)

        selected = f'tr[data-dead-id="{rows["replay"]}"] input[type=checkbox]'
        click(browser, selected, "a row")
        # The list is redrawn every 10 s: a selection survives it.
        drawn = browser.find_element(By.CSS_SELECTOR, selected)
        wait_for(lambda: is_stale(drawn), 25, "the dead letters to be redrawn")
        assert look(browser, selected)["selected"]
        click(browser, requeue, "the requeue button")

        def toast(message: str) -> bool:
            shown = look(browser, "#toast")
            return bool(shown.get("displayed") and message in shown.get("text", ""))

        wait_for(
            lambda: toast("Requeued 1 row of agent"),
            10,
            "the toast",
        )
        wait_for(
            lambda: site.store("agent").get(rows["replay"]).status == Status.CONSUMED,
            30,
            "the requeued row to be consumed",
        )

        # Requeue of one failure group from the page: its rows are consumed, the group
        # and the dead counts go down by three.
        click(
            browser,
            f'tr.group-row[data-signature="{WEBHOOK}"] [data-requeue-group]',
            "the group's requeue",
        )
        assert WEBHOOK in accept_confirm(browser)
        wait_for(
            lambda: toast("Requeued 3 row(s) of agent"),
            10,
            "the group's toast",
        )
        for row_id in rows["webhook"]:
            wait_for(
                lambda i=row_id: site.store("agent").get(i).status == Status.CONSUMED,
                30,
                f"group row {row_id} to be consumed",
            )
        wait_for(lambda: group_counts(browser) == {ROBOTS: 2}, 30, "only the robots' group left")
        wait_for(
            lambda: attr(browser, '[data-count="agent:dead"]', "data-value") == "2",
            30,
            "two dead letters left",
        )

        # The blocked key's dead head, skipped from the page: the key goes on.
        skip_head = f'{blocked_row} [data-skip-head="k-blocked"]'
        assert look(browser, skip_head)["enabled"]
        click(browser, skip_head, "the skip button")
        assert f"Skip #{rows['head']}?" in accept_confirm(browser)
        for row_id in rows["parked"]:
            wait_for(
                lambda i=row_id: site.store("steps").get(i).status == Status.CONSUMED,
                60,
                f"parked row {row_id} to be consumed",
            )
        wait_for(
            lambda: "No key is blocked." in text(browser, '[data-blocked-rows="steps"]'),
            30,
            "the blocked key to go",
        )
        reply = urllib.request.urlopen(f"{site.base}/outbox/blocked/?service=steps", timeout=10)
        assert b'"payload"' not in reply.read()
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
    assert stats["agent"]["dead"] == 2  # the two robots; the replayed rows were consumed
    assert stats["steps"]["consumed"] == 2 and stats["steps"]["skipped"] == 1
    assert sum(stats[s]["consumed"] for s in SERVICES) >= traffic.sent
    assert text(browser, '[data-health="agent"]') == "2 dead"
    assert text(browser, '[data-health="memory"]') == "healthy"
    # Caught up: no lag left on any partition (the broker's answer, refreshed every few s).
    wait_for(
        lambda: all(
            attr(browser, f'[data-lag-total="{s}"]', "data-value") == "0" for s in SERVICES
        ),
        60,
        "no lag once the traffic stopped",
    )
    assert TOKEN not in browser.page_source

    severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert severe == []  # no script errors, no blocked (CSP) or missing resources

    wait_for(lambda: not look(browser, "#toast").get("displayed"), 10, "the toast to go")
    shot = tmp_path / "dashboard.png"
    seen = save_page(browser, shot, {"badge": ("#worker-health", BADGE_GREEN)})
    assert shot.stat().st_size > 20_000
    assert seen["badge"] > 0, seen
    print(f"dashboard screenshot: {shot}")
