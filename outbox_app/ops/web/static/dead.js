/* The latest dead letters of each service on the outbox dashboard, with requeue of the
 * selected rows or of all; and the token form (a read token shows payloads, the admin
 * token also requeues and skips). Part of outbox-app (MIT licence, like the package).
 * Text goes in with textContent only: payloads and errors are user data.
 */
(function (global) {
  "use strict";

  const { cfg, el, number, ago, toast, getJSON, postJSON, access } = global.Outbox;
  const DEAD_REFRESH_MS = 10000;
  const DEAD_LIMIT = 10;
  const state = { dead: {} };

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

  // -- loading ------------------------------------------------------------------------
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
    // A refresh keeps what the operator selected and opened.
    const checked = new Set(
      Array.from(tbody.querySelectorAll("input[type=checkbox]:checked"), (c) => c.value)
    );
    const opened = new Set(
      Array.from(tbody.querySelectorAll("tr.details:not([hidden])"), (d) =>
        d.previousElementSibling ? d.previousElementSibling.dataset.deadId : ""
      )
    );
    tbody.replaceChildren();
    if (!page.items.length) {
      tbody.append(
        el("tr", { class: "empty" }, [el("td", { colspan: "7", text: "No dead letters." })])
      );
    }
    for (const item of page.items) {
      const id = String(item.id);
      const details = el("tr", { class: "details", hidden: opened.has(id) ? null : "" }, [
        el("td", { colspan: "7" }, [
          item.payload_hidden
            ? el("p", {
                class: "payload-hidden",
                text:
                  "Payload hidden (business data): enter the read token or the admin token " +
                  "above to see it.",
              })
            : el("pre", { class: "payload", text: JSON.stringify(item.payload, null, 2) }),
          el("p", { class: "full-error", text: item.last_error || "" }),
        ]),
      ]);
      const row = el("tr", { class: "dead-row", "data-dead-id": String(item.id) }, [
        el("td", {}, [
          el("input", {
            type: "checkbox",
            "aria-label": `select ${item.id}`,
            value: item.id,
            checked: checked.has(id) ? "" : null,
          }),
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

  // -- tokens: a read token shows payloads, the admin token also requeues ------------
  function updateAdmin() {
    const usable = cfg.admin_enabled && access.admin;
    const held = global.Outbox.token() !== "";
    for (const b of document.querySelectorAll(".admin-only")) b.disabled = !usable;
    document.getElementById("admin-forget").hidden = !held;
    const requeue = !cfg.admin_enabled
      ? "Requeue is off on this worker: OUTBOX_ADMIN_TOKEN is not set."
      : usable
        ? "Admin token in use for this tab. Requeued rows go back to pending with a fresh " +
          "attempt budget."
        : "Enter the admin token above to requeue.";
    const payloads = access.payloads
      ? "Payloads are shown."
      : "Payloads are hidden: enter the read token (or the admin token).";
    document.getElementById("dead-hint").textContent = `${requeue} ${payloads}`;
  }

  function refreshDead(service) {
    state.dead[service] = { count: -1, at: Date.now() };
    loadDead(service);
  }

  async function requeue(service, body, what) {
    try {
      const doc = await postJSON("/outbox/dead/requeue/", Object.assign({ service }, body));
      toast(`Requeued ${doc.count} ${what} of ${service}.`, "ok");
    } catch (err) {
      toast(`Requeue refused: ${err.message}`, "error");
    }
    refreshDead(service);
    global.Outbox.panels.loadGroups(service);
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
    const input = document.getElementById("admin-token");
    document.getElementById("admin").addEventListener("submit", async (e) => {
      e.preventDefault();
      if (!input.value) return;
      global.Outbox.setToken(input.value);
      input.value = "";
      input.placeholder = "token set";
      const got = await global.Outbox.checkAccess();
      toast(
        got.admin
          ? "Admin token: requeue and skip are on, payloads are shown."
          : got.payloads
            ? "Read token: payloads are shown."
            : "This token opens nothing on this worker.",
        got.admin || got.payloads ? "ok" : "error"
      );
    });
    document.getElementById("admin-forget").addEventListener("click", () => {
      global.Outbox.setToken("");
      input.placeholder = "read or admin token";
      global.Outbox.checkAccess();
    });
    if (global.Outbox.token()) input.placeholder = "token set";
    // Another token opens other things: redraw what depends on it.
    global.Outbox.onAccess(() => {
      updateAdmin();
      for (const service of cfg.services) {
        refreshDead(service);
        global.Outbox.panels.loadGroups(service);
      }
    });
  }

  global.Outbox.dead = {
    buildDeadSection,
    maybeRefreshDead,
    refreshDead,
    setUpAdmin,
    updateAdmin,
  };
})(window);
