/* What the dashboard's scripts share: the page config, DOM and formatting helpers, JSON
 * requests, and the token a user entered (kept in sessionStorage for this tab only; sent
 * as X-Outbox-Read-Token on reads, as X-Outbox-Admin-Token on changes; never put in the
 * page). Part of outbox-app (MIT licence, like the package). Text goes in with
 * textContent only: payloads and errors are user data.
 */
(function (global) {
  "use strict";

  const cfg = JSON.parse(document.getElementById("outbox-config").textContent);
  const TOKEN_KEY = "outbox-token";
  const READ_HEADER = "X-Outbox-Read-Token";
  const ADMIN_HEADER = "X-Outbox-Admin-Token";

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

  function token() {
    return sessionStorage.getItem(TOKEN_KEY) || "";
  }

  function setToken(value) {
    if (value) sessionStorage.setItem(TOKEN_KEY, value);
    else sessionStorage.removeItem(TOKEN_KEY);
  }

  // GETs carry the token as a read token (the admin token reads too), changes as admin.
  async function getJSON(url, options) {
    const opts = Object.assign({ cache: "no-store" }, options);
    const headers = Object.assign({}, opts.headers);
    if (token() && !(opts.method && opts.method !== "GET")) headers[READ_HEADER] = token();
    opts.headers = headers;
    const response = await fetch(url, opts);
    const body = await response.json().catch(() => ({}));
    if (!response.ok) {
      const error = new Error(body.error || `HTTP ${response.status}`);
      error.status = response.status;
      throw error;
    }
    return body;
  }

  function postJSON(url, body) {
    return getJSON(url, {
      method: "POST",
      headers: { "Content-Type": "application/json", [ADMIN_HEADER]: token() },
      body: JSON.stringify(body),
    });
  }

  // What the entered token opens, asked of the worker (it alone knows the tokens).
  const access = { payloads: cfg.payloads_open, admin: false, checked: false };
  const listeners = [];

  async function checkAccess() {
    const t = token();
    if (!t) {
      Object.assign(access, { payloads: cfg.payloads_open, admin: false, checked: true });
    } else {
      try {
        const doc = await getJSON("/outbox/api/access/", {
          headers: { [READ_HEADER]: t, [ADMIN_HEADER]: t },
        });
        Object.assign(access, { payloads: doc.payloads, admin: doc.admin, checked: true });
      } catch (err) {
        Object.assign(access, { admin: false, checked: true });
      }
    }
    for (const f of listeners) f(access);
    return access;
  }

  function onAccess(f) {
    listeners.push(f);
  }

  global.Outbox = {
    cfg, el, number, duration, ago, toast, token, setToken, getJSON, postJSON,
    access, checkAccess, onAccess,
  };
})(window);
