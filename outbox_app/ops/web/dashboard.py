"""The dashboard page and its assets, served by the worker itself (no CDN).

The page is a skeleton; ``static/dashboard.js`` fills it from the JSON endpoints and
draws the charts with ``static/chart.js``, a small hand-written canvas line chart;
``static/dead.js`` lists dead letters, ``static/panels.js`` has the incident panels
(health badge, failure groups, consumer lag, blocked keys), ``static/common.js`` what
they share.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

# The only files served from static/, with their types: nothing else can be asked for.
ASSETS = {
    "dashboard.css": "text/css",
    "chart.js": "text/javascript",
    "common.js": "text/javascript",
    "dead.js": "text/javascript",
    "panels.js": "text/javascript",
    "dashboard.js": "text/javascript",
    "favicon.svg": "image/svg+xml",
}
SCRIPTS = ("chart.js", "common.js", "dead.js", "panels.js", "dashboard.js")  # in load order

# Everything from this origin only: a stray CDN reference would simply fail to load.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Outbox · {title}</title>
<link rel="icon" href="/outbox/static/favicon.svg" type="image/svg+xml">
<link rel="stylesheet" href="/outbox/static/dashboard.css">
</head>
<body>
<header class="top">
  <div class="brand"><span class="logo" aria-hidden="true"></span>
    <div><h1>Outbox</h1><p class="sub" id="app-id"></p></div></div>
  <div class="worker-health" id="worker-health" data-state="unknown" role="status"
    title="this worker's broker and database connections">checking the worker…</div>
  <div class="live" id="live" data-state="connecting"><span class="dot"></span>
    <span id="live-text">connecting…</span></div>
  <form class="admin" id="admin" autocomplete="off">
    <label for="admin-token">Token</label>
    <input id="admin-token" type="password" placeholder="read or admin token"
      spellcheck="false" title="the read token shows payloads; the admin token also requeues">
    <button type="submit" id="admin-use">Use</button>
    <button type="button" id="admin-forget" class="ghost" hidden>Forget</button>
  </form>
</header>
<main>
  <section class="summary" id="summary" aria-label="All services"></section>
  <section class="services" id="services" aria-label="Services"></section>
  <section class="panel groups" aria-labelledby="groups-title">
    <div class="section-head"><h2 id="groups-title">Dead letters by failure</h2>
      <p class="hint">Errors with their ids, numbers and quoted values masked; requeue a
        group to replay every dead row that failed that way.</p></div>
    <div id="groups-tables"></div>
  </section>
  <section class="panel lag" aria-labelledby="lag-title">
    <div class="section-head"><h2 id="lag-title">Consumer lag</h2>
      <p class="hint" id="lag-state" data-state="stale">asking the broker…</p></div>
    <div class="lag-grid" id="lag-tables"></div>
  </section>
  <section class="panel blocked" id="blocked" aria-labelledby="blocked-title" hidden>
    <div class="section-head"><h2 id="blocked-title">Blocked keys</h2>
      <p class="hint">Ordered services: keys whose later rows wait for their head.</p></div>
    <div id="blocked-tables"></div>
  </section>
  <section class="dead-letters" aria-labelledby="dead-title">
    <div class="section-head"><h2 id="dead-title">Latest dead letters</h2>
      <p class="hint" id="dead-hint"></p></div>
    <div id="dead-tables"></div>
  </section>
</main>
<div class="toast" id="toast" role="status" hidden></div>
<noscript><p class="noscript">The dashboard needs JavaScript; the data is also at
<a href="/outbox/stats/">/outbox/stats/</a>.</p></noscript>
<script type="application/json" id="outbox-config">{config}</script>
{scripts}
</body>
</html>
"""


def render_page(config: dict[str, Any]) -> str:
    # JSON inside <script>: escape what could close the element or open a comment.
    data = json.dumps(config).replace("<", "\\u003c").replace(">", "\\u003e")
    data = data.replace("&", "\\u0026")
    title = "".join(c for c in str(config.get("app_id", "")) if c.isalnum() or c in "-_.")
    scripts = "\n".join(f'<script src="/outbox/static/{name}"></script>' for name in SCRIPTS)
    return PAGE.format(title=title or "dashboard", config=data, scripts=scripts)


@cache
def asset(name: str) -> tuple[bytes, str] | None:
    """(content, content type) of a whitelisted asset, else None."""
    kind = ASSETS.get(name)
    if kind is None:
        return None
    return resources.files(__package__).joinpath("static", name).read_bytes(), kind
