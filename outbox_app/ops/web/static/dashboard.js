/* The outbox dashboard: polls /outbox/api/series/ for counts, rates, latencies and the
 * worker's health, and draws a card per service with its charts. The other scripts:
 * common.js (helpers, the token), dead.js (latest dead letters, the token form) and
 * panels.js (health badge, failure groups, lag, blocked keys). Part of outbox-app (MIT
 * licence, like the package). Text goes in with textContent only.
 */
(function () {
  "use strict";

  const { cfg, el, number, duration, getJSON } = window.Outbox;
  const { panels, dead } = window.Outbox;
  // "published" is one word here, as in the stats, the CLI and the metrics: sent to Kafka
  // by the relay, waiting for its consumer.
  const PUBLISHED_TIP = "sent to Kafka, waiting for its consumer";
  const STATUSES = [
    ["pending", "Pending"],
    ["published", "Published"],
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
    p50: "#0ea5e9",
    p99: "#a855f7",
  };
  const WINDOW_S = 300;
  const POLL_MS = 1500;

  const state = { since: 0, points: [], now: 0, cards: {}, polls: 0 };

  // -- layout -------------------------------------------------------------------------
  function tile(service, status, label) {
    const tip = status === "published" ? PUBLISHED_TIP : undefined;
    return el("div", { class: `tile ${status}`, title: tip }, [
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
      items.map(([key, label, tip]) =>
        el("li", { title: tip }, [
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
      ["published_rate", "published/s", "rows sent to Kafka by the relay, per second"],
      ["consume_rate", "consumed/s"],
    ]);
    const backlog = chartBox("Backlog · rows", `chart-backlog-${service}`, [
      ["pending", "pending"],
      ["published", "published", PUBLISHED_TIP],
    ]);
    // Percentiles of what this worker's consumers handled since the previous sample:
    // another worker of the group has its own.
    const latency = chartBox(
      "End-to-end latency · ms · this worker's consumers",
      `chart-latency-${service}`,
      [
        ["latency_p50_ms", "p50", "row created → handler committed, median"],
        ["latency_p99_ms", "p99"],
      ]
    );
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
      el("div", { class: "charts" }, [rates.node, backlog.node, latency.node]),
    ]);
    state.cards[service] = {
      card,
      rateChart: new LineChart(rates.canvas, {
        windowS: WINDOW_S,
        // Consumed first and published dashed on top: in steady state they coincide.
        series: [
          { key: "consume_rate", label: "consumed/s", color: COLORS.consume, fill: true },
          { key: "published_rate", label: "published/s", color: COLORS.publish, dash: [5, 4] },
        ],
      }),
      backlogChart: new LineChart(backlog.canvas, {
        windowS: WINDOW_S,
        series: [
          { key: "pending", label: "pending", color: COLORS.pending, fill: true },
          { key: "published", label: "published", color: COLORS.published },
        ],
      }),
      latencyChart: new LineChart(latency.canvas, {
        windowS: WINDOW_S,
        series: [
          { key: "latency_p50_ms", label: "p50 ms", color: COLORS.p50, fill: true },
          { key: "latency_p99_ms", label: "p99 ms", color: COLORS.p99 },
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
      card.latencyChart.setData(series, state.now);
      const legendValue = (key, v) => {
        const node = card.card.querySelector(`[data-legend="${key}"]`);
        node.textContent = typeof v === "number" ? LineChart.formatValue(v) : "–";
        node.dataset.value = typeof v === "number" ? String(v) : "";
      };
      // The newest value there is: a sample in which nothing was consumed has none.
      const latest = (key) => {
        for (let i = series.length - 1; i >= 0; i--) {
          if (typeof series[i][key] === "number") return series[i][key];
        }
        return null;
      };
      for (const key of ["published_rate", "consume_rate", "latency_p50_ms", "latency_p99_ms"]) {
        legendValue(key, latest(key));
      }
      legendValue("pending", counts.pending);
      legendValue("published", counts.published);
      dead.maybeRefreshDead(service, counts.dead);
      panels.maybeRefreshGroups(service, counts.dead);
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
      panels.renderHealth(doc.health, doc.now);
      state.polls += 1;
      document.body.dataset.polls = String(state.polls);
      setLive(true);
    } catch (err) {
      setLive(false, err.message);
      panels.unknownHealth(err.message);
    } finally {
      setTimeout(poll, POLL_MS);
    }
  }

  // -- start --------------------------------------------------------------------------
  document.getElementById("app-id").textContent =
    `${cfg.app_id} · serving ${cfg.services.join(", ")}`;
  buildSummary();
  const cards = document.getElementById("services");
  const deadTables = document.getElementById("dead-tables");
  for (const service of cfg.services) {
    cards.append(buildCard(service));
    deadTables.append(dead.buildDeadSection(service));
  }
  panels.start();
  dead.setUpAdmin();
  dead.updateAdmin();
  window.Outbox.checkAccess();
  poll();
})();
