"""The dashboard page and its assets, served by the worker itself (no CDN).

The page is a skeleton; ``static/dashboard.js`` fills it from the JSON endpoints and
draws the charts with ``static/chart.js``, a small hand-written canvas line chart.
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
    "dashboard.js": "text/javascript",
    "favicon.svg": "image/svg+xml",
}

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
  <div class="live" id="live" data-state="connecting"><span class="dot"></span>
    <span id="live-text">connecting…</span></div>
  <form class="admin" id="admin" autocomplete="off">
    <label for="admin-token">Admin token</label>
    <input id="admin-token" type="password" placeholder="to requeue" spellcheck="false">
    <button type="submit" id="admin-use">Use</button>
    <button type="button" id="admin-forget" class="ghost" hidden>Forget</button>
  </form>
</header>
<main>
  <section class="summary" id="summary" aria-label="All services"></section>
  <section class="services" id="services" aria-label="Services"></section>
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
<script src="/outbox/static/chart.js"></script>
<script src="/outbox/static/dashboard.js"></script>
</body>
</html>
"""


def render_page(config: dict[str, Any]) -> str:
    # JSON inside <script>: escape what could close the element or open a comment.
    data = json.dumps(config).replace("<", "\\u003c").replace(">", "\\u003e")
    data = data.replace("&", "\\u0026")
    title = "".join(c for c in str(config.get("app_id", "")) if c.isalnum() or c in "-_.")
    return PAGE.format(title=title or "dashboard", config=data)


@cache
def asset(name: str) -> tuple[bytes, str] | None:
    """(content, content type) of a whitelisted asset, else None."""
    kind = ASSETS.get(name)
    if kind is None:
        return None
    return resources.files(__package__).joinpath("static", name).read_bytes(), kind
