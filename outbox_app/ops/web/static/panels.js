/* The incident panels of the outbox dashboard: the worker's health badge, dead letters
 * grouped by failure signature (with requeue per group), consumer lag per partition, and
 * the blocked keys of ordered services (requeue or skip of the head). None of them ever
 * shows a payload. Part of outbox-app (MIT licence, like the package).
 */
(function (global) {
  "use strict";

  const { cfg, el, number, duration, ago, toast, getJSON, postJSON, access } = global.Outbox;
  const GROUPS_REFRESH_MS = 10000;
  const LAG_POLL_MS = 3000;
  const BLOCKED_POLL_MS = 5000;
  const known = { groups: {} };

  function seconds(s) {
    return s < 60 ? `${Math.round(s)} s` : duration(s);
  }

  function table(head, tbodyAttrs) {
    return el("div", { class: "table-wrap" }, [
      el("table", { class: "panel-table" }, [
        el("thead", {}, [el("tr", {}, head.map((h) => el("th", { text: h })))]),
        el("tbody", tbodyAttrs),
      ]),
    ]);
  }

  function empty(tbody, cols, text) {
    const row = el("tr", { class: "empty" }, [el("td", { colspan: String(cols), text })]);
    tbody.replaceChildren(row);
  }

  function adminButton(text, attrs, onclick) {
    const props = Object.assign({ type: "button", class: "admin-only small", text }, attrs);
    const button = el("button", Object.assign(props, { onclick }));
    button.disabled = !(cfg.admin_enabled && access.admin);
    return button;
  }

  // -- health badge: green while broker and database answer, red with why when not ------
  function renderHealth(health, now) {
    const badge = document.getElementById("worker-health");
    const down = Object.entries(health || {}).filter(([, d]) => !d.up);
    badge.dataset.state = down.length ? "down" : "ok";
    badge.textContent = down.length
      ? down.map(([name, d]) => downText(name, d, now)).join(" · ")
      : "broker and database up";
  }

  function downText(name, dependency, now) {
    const since = dependency.down_since;
    const lasted = since === null ? "" : ` for ${seconds(Math.max(0, now - since))}`;
    return `${name} down${lasted}: ${dependency.reason || "no reason given"}`;
  }

  function unknownHealth(message) {
    const badge = document.getElementById("worker-health");
    badge.dataset.state = "unknown";
    badge.textContent = `worker not answering: ${message}`;
  }

  // -- dead letters grouped by failure signature --------------------------------------
  function buildGroups(service) {
    const head = ["dead", "failure signature", "event types", "first", "last", "sample", ""];
    return el("div", { class: "panel-service", "data-groups-service": service }, [
      el("div", { class: "panel-head" }, [
        el("h3", { text: service }),
        el("p", { class: "hint", "data-groups-scan": service }),
      ]),
      table(head, { "data-groups-rows": service }),
    ]);
  }

  function maybeRefreshGroups(service, dead) {
    const k = known.groups[service] || { dead: -1, at: 0 };
    if (k.dead === dead && Date.now() - k.at < GROUPS_REFRESH_MS) return;
    known.groups[service] = { dead, at: Date.now() };
    loadGroups(service);
  }

  async function loadGroups(service) {
    let doc;
    try {
      doc = await getJSON(`/outbox/dead/groups/?service=${encodeURIComponent(service)}`);
    } catch (err) {
      return;
    }
    const tbody = document.querySelector(`[data-groups-rows="${service}"]`);
    document.querySelector(`[data-groups-scan="${service}"]`).textContent = doc.scan_cut
      ? `Grouped the newest ${number(doc.scanned)} dead rows only: older ones are not counted.`
      : `${number(doc.scanned)} dead row(s) in ${doc.group_count} group(s).`;
    if (!doc.groups.length) return empty(tbody, 7, "No dead letters.");
    tbody.replaceChildren(...doc.groups.map((g) => groupRow(service, g)));
  }

  function groupRow(service, g) {
    const attrs = { class: "group-row", "data-signature": g.signature };
    return el("tr", Object.assign(attrs, { "data-group-count": String(g.count) }), [
      el("td", { class: "num strong", text: number(g.count) }),
      el("td", { class: "error signature", text: g.signature, title: g.signature }),
      el("td", { class: "mono", text: g.event_types.join(", ") }),
      el("td", { text: ago(g.first_seen), title: g.first_seen }),
      el("td", { text: ago(g.last_seen), title: g.last_seen }),
      // The full error of the newest row of the group, on hover.
      el("td", { class: "num", text: `#${g.sample.id}`, title: g.sample.last_error || "" }),
      el("td", {}, [
        adminButton("Requeue group", { "data-requeue-group": service }, () =>
          requeueGroup(service, g)
        ),
      ]),
    ]);
  }

  async function requeueGroup(service, group) {
    const question = `Requeue the ${group.count} dead letter(s) of ${service} that failed with:`;
    if (!confirm(`${question}\n\n${group.signature}`)) return;
    try {
      const doc = await postJSON("/outbox/dead/requeue/", { service, signature: group.signature });
      toast(`Requeued ${doc.count} row(s) of ${service} with this failure.`, "ok");
    } catch (err) {
      toast(`Requeue refused: ${err.message}`, "error");
    }
    known.groups[service] = { dead: -1, at: Date.now() };
    loadGroups(service);
    global.Outbox.dead.refreshDead(service);
  }

  // -- consumer lag, from the broker ---------------------------------------------------
  function buildLag(service) {
    return el("div", { class: "lag-service", "data-lag-service": service }, [
      el("div", { class: "panel-head" }, [
        el("h3", {}, [
          el("span", { text: service }),
          el("span", { class: "pill lag-pill", "data-lag-total": service, text: "–" }),
        ]),
        el("p", { class: "hint mono", "data-lag-topic": service }),
      ]),
      table(["partition", "committed", "end", "lag"], { "data-lag-rows": service }),
    ]);
  }

  function lagState(doc) {
    if (!doc.stale) return `From the broker, ${seconds(doc.age_s)} ago · group ${doc.group}`;
    const last = doc.as_of ? `last broker answer ${seconds(doc.age_s)} ago` : "no answer yet";
    return `Stale, ${last}${doc.error ? ` — ${doc.error}` : ""}`;
  }

  async function pollLag() {
    const state = document.getElementById("lag-state");
    try {
      const doc = await getJSON("/outbox/lag/");
      state.dataset.state = doc.stale ? "stale" : "fresh";
      state.textContent = lagState(doc);
      for (const service of cfg.services) renderLag(service, doc.services[service]);
    } catch (err) {
      state.dataset.state = "stale";
      state.textContent = `Lag not available: ${err.message}`;
    } finally {
      setTimeout(pollLag, LAG_POLL_MS);
    }
  }

  function renderLag(service, lag) {
    if (!lag) return;
    const pill = document.querySelector(`[data-lag-total="${service}"]`);
    const tbody = document.querySelector(`[data-lag-rows="${service}"]`);
    pill.textContent = `${number(lag.total)} behind`;
    pill.dataset.value = String(lag.total);
    pill.dataset.kind = lag.total > 0 ? "behind" : "ok";
    document.querySelector(`[data-lag-topic="${service}"]`).textContent = lag.topic;
    if (lag.missing) return empty(tbody, 4, "The topic does not exist yet.");
    tbody.replaceChildren(
      ...lag.partitions.map((p) =>
        el("tr", { "data-lag-partition": String(p.partition) }, [
          el("td", { class: "num", text: String(p.partition) }),
          el("td", { class: "num", text: p.committed === null ? "none" : number(p.committed) }),
          el("td", { class: "num", text: number(p.end) }),
          el("td", { class: p.lag > 0 ? "num strong behind" : "num", text: number(p.lag) }),
        ])
      )
    );
  }

  // -- blocked keys of ordered services ------------------------------------------------
  function buildBlocked(service) {
    const head = ["key", "head", "head status", "head's last error", "parked", "blocked for", ""];
    return el("div", { class: "panel-service", "data-blocked-service": service }, [
      el("div", { class: "panel-head" }, [el("h3", { text: service })]),
      table(head, { "data-blocked-rows": service }),
    ]);
  }

  async function loadBlocked(service) {
    try {
      const url = `/outbox/blocked/?service=${encodeURIComponent(service)}`;
      renderBlocked(service, await getJSON(url));
    } catch (err) {
      /* the next poll tries again */
    }
  }

  async function pollBlocked() {
    for (const service of cfg.ordered) await loadBlocked(service);
    setTimeout(pollBlocked, BLOCKED_POLL_MS);
  }

  function renderBlocked(service, doc) {
    const tbody = document.querySelector(`[data-blocked-rows="${service}"]`);
    if (!doc.items.length) return empty(tbody, 7, "No key is blocked.");
    tbody.replaceChildren(...doc.items.map((b) => blockedRow(service, b)));
  }

  function blockedRow(service, b) {
    const head = b.head;
    // Only a dead head waits for an operator; a failing one is retried by itself.
    const actions =
      head.status === "dead"
        ? [
            adminButton("Requeue head", { "data-requeue-head": b.key }, () =>
              headAction(service, b, "requeue")
            ),
            adminButton(
              "Skip head",
              { class: "admin-only small danger", "data-skip-head": b.key },
              () => headAction(service, b, "skip")
            ),
          ]
        : [el("span", { class: "hint", text: "retrying" })];
    const attrs = { class: "blocked-row", "data-blocked-key": b.key };
    return el("tr", Object.assign(attrs, { "data-head-id": String(head.id) }), [
      el("td", { class: "mono", text: b.key }),
      el("td", { class: "num", text: `#${head.id}` }),
      el("td", {}, [el("span", { class: `status status-${head.status}`, text: head.status })]),
      el("td", { class: "error", text: head.last_error || "—", title: head.last_error || "" }),
      el("td", { class: "num", text: number(b.parked) }),
      el("td", { text: ago(b.blocked_since).replace(" ago", ""), title: b.blocked_since }),
      el("td", { class: "actions" }, actions),
    ]);
  }

  async function headAction(service, blocked, action) {
    const id = blocked.head.id;
    if (action === "skip" && !confirm(`Skip #${id}? Key ${blocked.key} goes on without it.`)) {
      return;
    }
    const done = action === "skip" ? "Skipped" : "Requeued";
    try {
      const doc = await postJSON(`/outbox/dead/${action}/`, { service, id });
      toast(`${done} ${doc.count} head row of ${service} (key ${blocked.key}).`, "ok");
    } catch (err) {
      toast(`${action === "skip" ? "Skip" : "Requeue"} refused: ${err.message}`, "error");
    }
    loadBlocked(service);
    global.Outbox.dead.refreshDead(service);
  }

  function start() {
    const groups = document.getElementById("groups-tables");
    const lag = document.getElementById("lag-tables");
    for (const service of cfg.services) {
      groups.append(buildGroups(service));
      lag.append(buildLag(service));
    }
    document.getElementById("blocked").hidden = !cfg.ordered.length;
    const blocked = document.getElementById("blocked-tables");
    for (const service of cfg.ordered) blocked.append(buildBlocked(service));
    pollLag();
    if (cfg.ordered.length) pollBlocked();
  }

  global.Outbox.panels = { start, renderHealth, unknownHealth, maybeRefreshGroups, loadGroups };
})(window);
