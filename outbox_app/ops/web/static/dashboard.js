/* The outbox dashboard: polls /outbox/api/series/ for counts and rates, draws a card
 * per service, and lists the latest dead letters with a requeue button that works
 * only once an admin token is entered (kept in sessionStorage, sent as a header).
 * Part of outbox-app (MIT licence, like the package). Text goes in with textContent
 * only: payloads and errors are user data.
 */
(function () {
  "use strict";

  const cfg = JSON.parse(document.getElementById("outbox-config").textContent);
  const STATUSES = [
    ["pending", "Pending"],
    ["published", "In flight"],
    ["consumed", "Consumed"],
    ["dead", "Dead"],
  ];
  const COLORS = {
    pending: "#f59e0b",
    published: "#3b82f6",
    consumed: "#10b981",
    dead: "#ef4444",
    publish: "#6366f1",
    consume: "#10b981",
  };
  const WINDOW_S = 300;
  const POLL_MS = 1500;
  const DEAD_REFRESH_MS = 10000;
  const DEAD_LIMIT = 10;
  const TOKEN_KEY = "outbox-admin-token";
  const TOKEN_HEADER = "X-Outbox-Admin-Token";

  const state = { since: 0, points: [], now: 0, cards: {}, dead: {}, polls: 0 };

  // -- small DOM helpers --------------------------------------------------------------
  function el(tag, props, children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v === undefined || v === null) continue;
      if (k === "text") node.textContent = v;
      else if (k === "class") node.className = v;
      else if (k.startsWith("data-")) node.dataset[camel(k.slice(5))] = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v);
    }
    for (const child of children || []) if (child) node.append(child);
    return node;
  }

  function camel(s) {
    return s.replace(/-([a-z])/g, (_, c) => c.toUpperCase());
  }

  function number(n) {
    return Number(n).toLocaleString("en-US");
  }

  function duration(s) {
    if (s === null || s === undefined) return "—";
    if (s < 10) return `${s.toFixed(1)}s`;
    if (s < 60) return `${Math.round(s)}s`;
    if (s < 3600) return `${Math.floor(s / 60)}m ${Math.round(s % 60)}s`;
    if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
    return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
  }

  function ago(iso) {
    if (!iso) return "—";
    const s = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
    return `${duration(s)} ago`;
  }

  function toast(message, kind) {
    const t = document.getElementById("toast");
    t.textContent = message;
    t.dataset.kind = kind || "info";
    t.hidden = false;
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => (t.hidden = true), 5000);
  }

  async function getJSON(url, options) {
    const response = await fetch(url, Object.assign({ cache: "no-store" }, options));
    const body = await response.json().catch(() => ({}));
    if (!response.ok) {
      const error = new Error(body.error || `HTTP ${response.status}`);
      error.status = response.status;
      throw error;
    }
    return body;
  }

  // -- layout -------------------------------------------------------------------------
  function tile(service, status, label) {
    return el("div", { class: `tile ${status}` }, [
      el("span", { class: "tile-label", text: label }),
      el("span", {
        class: "tile-value",
        text: "–",
        "data-count": `${service}:${status}`,
      }),
    ]);
  }

  function legend(items) {
    return el(
      "ul",
      { class: "legend" },
      items.map(([key, label, color]) =>
        el("li", {}, [
          el("span", { class: `swatch swatch-${key}` }),
          el("span", { text: label }),
          el("strong", { "data-legend": key, text: "–" }),
        ])
      )
    );
  }

  function chartBox(title, canvasId, items) {
    const canvas = el("canvas", { id: canvasId, class: "chart", role: "img", "aria-label": title });
    return {
      canvas,
      node: el("div", { class: "chart-box" }, [
        el("div", { class: "chart-head" }, [el("h3", { text: title }), legend(items)]),
        canvas,
      ]),
    };
  }

  function buildCard(service) {
    const rates = chartBox("Throughput · events/s", `chart-rate-${service}`, [
      ["publish", "published", COLORS.publish],
      ["consume", "consumed", COLORS.consume],
    ]);
    const backlog = chartBox("Backlog · rows", `chart-backlog-${service}`, [
      ["pending", "pending", COLORS.pending],
      ["published", "in flight", COLORS.published],
    ]);
    const card = el("article", { class: "card", "data-service": service }, [
      el("header", { class: "card-head" }, [
        el("div", {}, [
          el("h2", { text: service }),
          el("p", { class: "types", text: (cfg.event_types[service] || []).join(" · ") }),
        ]),
        el("span", { class: "health", "data-health": service, text: "…" }),
      ]),
      el(
        "div",
        { class: "tiles" },
        STATUSES.map(([s, label]) => tile(service, s, label))
      ),
      el("p", { class: "oldest" }, [
        el("span", { text: "Oldest pending " }),
        el("strong", { "data-oldest": service, text: "—" }),
      ]),
      el("div", { class: "charts" }, [rates.node, backlog.node]),
    ]);
    state.cards[service] = {
      card,
      rateChart: new LineChart(rates.canvas, {
        windowS: WINDOW_S,
        // Consumed first and published dashed on top: in steady state they coincide.
        series: [
          { key: "consume_rate", label: "consumed/s", color: COLORS.consume, fill: true },
          { key: "publish_rate", label: "published/s", color: COLORS.publish, dash: [5, 4] },
        ],
      }),
      backlogChart: new LineChart(backlog.canvas, {
        windowS: WINDOW_S,
        series: [
          { key: "pending", label: "pending", color: COLORS.pending, fill: true },
          { key: "published", label: "in flight", color: COLORS.published },
        ],
      }),
    };
    return card;
  }

  function buildSummary() {
    const summary = document.getElementById("summary");
    for (const [s, label] of STATUSES) summary.append(tile("all", s, label));
    summary.append(
      el("div", { class: "tile oldest-all" }, [
        el("span", { class: "tile-label", text: "Oldest pending" }),
        el("span", { class: "tile-value", "data-oldest": "all", text: "—" }),
      ])
    );
  }

  function buildDeadSection(service) {
    const section = el("div", { class: "dead-service", "data-dead-service": service }, [
      el("div", { class: "dead-head" }, [
        el("h3", {}, [
          el("span", { text: service }),
          el("span", { class: "pill", "data-dead-count": service, text: "0" }),
        ]),
        el("div", { class: "dead-actions" }, [
          el("button", {
            type: "button",
            class: "admin-only",
            "data-requeue-selected": service,
            text: "Requeue selected",
            onclick: () => requeueSelected(service),
          }),
          el("button", {
            type: "button",
            class: "admin-only danger",
            "data-requeue-all": service,
            text: "Requeue all dead",
            onclick: () => requeueAll(service),
          }),
        ]),
      ]),
      el("div", { class: "table-wrap" }, [
        el("table", { class: "dead-table" }, [
          el("thead", {}, [
            el(
              "tr",
              {},
              ["", "id", "event type", "key", "attempts", "died", "last error"].map((h) =>
                el("th", { text: h })
              )
            ),
          ]),
          el("tbody", { "data-dead-rows": service }),
        ]),
      ]),
    ]);
    return section;
  }

  // -- live data ----------------------------------------------------------------------
  function setLive(ok, message) {
    const live = document.getElementById("live");
    live.dataset.state = ok ? "live" : "down";
    document.getElementById("live-text").textContent = ok
      ? `live · updated ${new Date().toLocaleTimeString()}`
      : `no data: ${message}`;
  }

  function merge(points) {
    for (const p of points) state.points.push(p);
    const oldest = state.now - WINDOW_S - 10;
    while (state.points.length && state.points[0].t < oldest) state.points.shift();
  }

  function health(counts) {
    if (counts.dead > 0) return ["bad", `${number(counts.dead)} dead`];
    const age = counts.oldest_pending_age_s;
    if (age !== null && age > 300) return ["bad", `stuck ${duration(age)}`];
    if (age !== null && age > 60) return ["warn", `slow ${duration(age)}`];
    return ["ok", "healthy"];
  }

  function setCount(key, value) {
    for (const node of document.querySelectorAll(`[data-count="${key}"]`)) {
      node.textContent = number(value);
      node.dataset.value = String(value);
    }
  }

  function render(doc) {
    const totals = { pending: 0, published: 0, consumed: 0, dead: 0 };
    let oldest = null;
    for (const service of cfg.services) {
      const counts = doc.stats.services[service];
      if (!counts) continue;
      for (const [s] of STATUSES) {
        setCount(`${service}:${s}`, counts[s]);
        totals[s] += counts[s];
      }
      const age = counts.oldest_pending_age_s;
      if (age !== null && (oldest === null || age > oldest)) oldest = age;
      document.querySelector(`[data-oldest="${service}"]`).textContent = duration(age);
      const [kind, text] = health(counts);
      const badge = document.querySelector(`[data-health="${service}"]`);
      badge.dataset.kind = kind;
      badge.textContent = text;

      const series = state.points.map((p) => Object.assign({ t: p.t }, p.services[service]));
      const card = state.cards[service];
      card.rateChart.setData(series, state.now);
      card.backlogChart.setData(series, state.now);
      const last = series.length ? series[series.length - 1] : {};
      const legendValue = (key, v) => {
        const node = card.card.querySelector(`[data-legend="${key}"]`);
        node.textContent = typeof v === "number" ? LineChart.formatValue(v) : "–";
      };
      legendValue("publish", last.publish_rate);
      legendValue("consume", last.consume_rate);
      legendValue("pending", counts.pending);
      legendValue("published", counts.published);
      maybeRefreshDead(service, counts.dead);
    }
    for (const [s] of STATUSES) setCount(`all:${s}`, totals[s]);
    document.querySelector('[data-oldest="all"]').textContent = duration(oldest);
    document.title = totals.dead
      ? `(${totals.dead} dead) Outbox · ${cfg.app_id}`
      : `Outbox · ${cfg.app_id}`;
  }

  async function poll() {
    try {
      const doc = await getJSON(`/outbox/api/series/?since=${state.since}`);
      state.now = doc.now;
      merge(doc.points);
      if (doc.points.length) state.since = doc.points[doc.points.length - 1].t;
      render(doc);
      state.polls += 1;
      document.body.dataset.polls = String(state.polls);
      setLive(true);
    } catch (err) {
      setLive(false, err.message);
    } finally {
      setTimeout(poll, POLL_MS);
    }
  }

  // -- dead letters -------------------------------------------------------------------
  function maybeRefreshDead(service, count) {
    const known = state.dead[service] || { count: -1, at: 0 };
    if (known.count === count && Date.now() - known.at < DEAD_REFRESH_MS) return;
    state.dead[service] = { count, at: Date.now() };
    document.querySelector(`[data-dead-count="${service}"]`).textContent = number(count);
    loadDead(service);
  }

  async function loadDead(service) {
    const tbody = document.querySelector(`[data-dead-rows="${service}"]`);
    let page;
    try {
      page = await getJSON(
        `/outbox/dead/?service=${encodeURIComponent(service)}&limit=${DEAD_LIMIT}`
      );
    } catch (err) {
      return;
    }
    tbody.replaceChildren();
    if (!page.items.length) {
      tbody.append(
        el("tr", { class: "empty" }, [el("td", { colspan: "7", text: "No dead letters." })])
      );
    }
    for (const item of page.items) {
      const details = el("tr", { class: "details", hidden: "" }, [
        el("td", { colspan: "7" }, [
          el("pre", { text: JSON.stringify(item.payload, null, 2) }),
          el("p", { class: "full-error", text: item.last_error || "" }),
        ]),
      ]);
      const row = el("tr", { class: "dead-row", "data-dead-id": String(item.id) }, [
        el("td", {}, [
          el("input", { type: "checkbox", "aria-label": `select ${item.id}`, value: item.id }),
        ]),
        el("td", {}, [
          el("a", {
            href: `/outbox/messages/${encodeURIComponent(service)}/${item.id}/`,
            text: String(item.id),
          }),
        ]),
        el("td", { class: "mono", text: item.event_type }),
        el("td", { class: "mono", text: item.key || "—" }),
        el("td", { class: "num", text: `${item.attempts}/${item.max_retry}` }),
        el("td", { text: ago(item.updated_at), title: item.updated_at }),
        el("td", { class: "error", text: item.last_error || "", title: "click for details" }),
      ]);
      row.addEventListener("click", (e) => {
        if (e.target.closest("input, a")) return;
        details.hidden = !details.hidden;
      });
      tbody.append(row, details);
    }
    if (page.next_offset !== null) {
      tbody.append(
        el("tr", { class: "more" }, [
          el("td", {
            colspan: "7",
            text: `Showing the latest ${page.items.length}: more at /outbox/dead/?service=${service}&offset=${page.next_offset}`,
          }),
        ])
      );
    }
    updateAdmin();
  }

  // -- admin --------------------------------------------------------------------------
  function token() {
    return sessionStorage.getItem(TOKEN_KEY) || "";
  }

  function updateAdmin() {
    const usable = cfg.admin_enabled && token() !== "";
    for (const b of document.querySelectorAll(".admin-only")) b.disabled = !usable;
    document.getElementById("admin-forget").hidden = token() === "";
    document.getElementById("admin-token").disabled = !cfg.admin_enabled;
    document.getElementById("admin-use").disabled = !cfg.admin_enabled;
    document.getElementById("dead-hint").textContent = !cfg.admin_enabled
      ? "Requeue is off on this worker: OUTBOX_ADMIN_TOKEN is not set."
      : usable
        ? "Admin token in use for this tab. Requeued rows go back to pending with a fresh attempt budget."
        : "Enter the admin token above to requeue.";
  }

  async function requeue(service, body, what) {
    try {
      const doc = await getJSON("/outbox/dead/requeue/", {
        method: "POST",
        headers: { "Content-Type": "application/json", [TOKEN_HEADER]: token() },
        body: JSON.stringify(Object.assign({ service }, body)),
      });
      toast(`Requeued ${doc.count} ${what} of ${service}.`, "ok");
    } catch (err) {
      toast(`Requeue refused: ${err.message}`, "error");
    }
    state.dead[service] = { count: -1, at: 0 };
  }

  function requeueSelected(service) {
    const boxes = document.querySelectorAll(
      `[data-dead-rows="${service}"] input[type=checkbox]:checked`
    );
    const ids = Array.from(boxes, (b) => Number(b.value));
    if (!ids.length) {
      toast("Select dead letters first.", "info");
      return;
    }
    requeue(service, { ids }, ids.length === 1 ? "row" : "rows");
  }

  function requeueAll(service) {
    if (!confirm(`Requeue every dead letter of ${service}?`)) return;
    requeue(service, { all: true }, "rows");
  }

  function setUpAdmin() {
    document.getElementById("admin").addEventListener("submit", (e) => {
      e.preventDefault();
      const input = document.getElementById("admin-token");
      if (input.value) sessionStorage.setItem(TOKEN_KEY, input.value);
      input.value = "";
      input.placeholder = "token set";
      updateAdmin();
    });
    document.getElementById("admin-forget").addEventListener("click", () => {
      sessionStorage.removeItem(TOKEN_KEY);
      document.getElementById("admin-token").placeholder = "to requeue";
      updateAdmin();
    });
    if (token()) document.getElementById("admin-token").placeholder = "token set";
  }

  // -- start --------------------------------------------------------------------------
  document.getElementById("app-id").textContent =
    `${cfg.app_id} · serving ${cfg.services.join(", ")}`;
  buildSummary();
  const cards = document.getElementById("services");
  const deadTables = document.getElementById("dead-tables");
  for (const service of cfg.services) {
    cards.append(buildCard(service));
    deadTables.append(buildDeadSection(service));
  }
  setUpAdmin();
  updateAdmin();
  poll();
})();
