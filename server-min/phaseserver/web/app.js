// phasekit server: the operator page. One module, no build step, nothing from elsewhere.
//
// What it is for: the fleet, one transformer (currents, neutral, CUF, the balancer's moves, its nodes),
// the alarms with acknowledge and clear, and the audit log, from the server's own API, kept current by
// its live stream (Server-Sent Events: /api/v1/live says *that* something changed; the page reloads it).
//
// The one thing to know: no string from the server ever becomes markup. Elements are made with h() and
// s(), text goes in as text nodes, and the page's Content-Security-Policy enforces Trusted Types with no
// policy, so innerHTML and its kin would throw. State-changing requests carry the session's CSRF token.

"use strict";

// ------------------------------------------------------------------ small helpers

const SVG = "http://www.w3.org/2000/svg";

// An element: h("a", {href: "#/fleet", class: "x"}, "text", child). Strings become text nodes.
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  for (const c of children.flat(Infinity)) {
    if (c !== null && c !== undefined && c !== false) el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

// An SVG element, the same way.
function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  setAttrs(el, attrs);
  for (const c of children.flat(Infinity)) {
    if (c !== null && c !== undefined && c !== false) el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

function setAttrs(el, attrs) {
  if (!attrs) return;
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
}

const fmtClock = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const fmtDay = new Intl.DateTimeFormat(undefined, { weekday: "short", day: "numeric", month: "short" });
const fmtDate = new Intl.DateTimeFormat(undefined, { day: "numeric", month: "short" });
const fmtFull = new Intl.DateTimeFormat(undefined, {
  year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit",
});
const fmtMinute = new Intl.DateTimeFormat(undefined, {
  weekday: "short", hour: "2-digit", minute: "2-digit",
});

function ago(tS) {
  const d = Math.max(0, Date.now() / 1000 - tS);
  if (d < 60) return "just now";
  if (d < 3600) return Math.floor(d / 60) + " min ago";
  if (d < 86400 * 2) return Math.floor(d / 3600) + " h ago";
  return Math.floor(d / 86400) + " days ago";
}

// A <time> showing "5 min ago" (kept current), the full time on hover and for assistive technology.
function when(tS, mode = "rel") {
  if (tS === null || tS === undefined) return h("span", { class: "muted" }, "never");
  const d = new Date(tS * 1000);
  const text = mode === "rel" ? ago(tS) : fmtFull.format(d);
  const attrs = { datetime: d.toISOString(), title: fmtFull.format(d) };
  if (mode === "rel") attrs["data-rel"] = String(tS);
  return h("time", attrs, text);
}

function amps(v) {
  return v === null || v === undefined || !isFinite(v) ? "–" : v.toFixed(1) + " A";
}

function percent(v) {
  return v === null || v === undefined || !isFinite(v) ? "–" : (v * 100).toFixed(1) + " %";
}

const SEVERITY = { 1: "warning", 2: "minor", 3: "major", 4: "critical" };
const ALARM_TYPES = {
  node_silent: "Node silent",
  pi_offline: "Pi offline",
  overcurrent: "Over-current",
  unbalance: "Unbalance",
  relay_fault: "Relay did not switch",
  meter_implausible: "Meter reading implausible",
  auth_failures: "Authentication failures",
  backlog: "Pi backlog",
  notify_backlog: "Notification backlog",
};
const ROLE_NAMES = {
  viewer: "viewer", operator: "operator", installer: "installer", secadmin: "security administrator",
  auditor: "auditor", sysadmin: "system administrator", monitor: "monitor",
};

function severityBadge(sev, suffix) {
  const name = SEVERITY[sev] || String(sev);
  return h("span", { class: "badge sev-" + name }, name + (suffix ? " " + suffix : ""));
}

function stateBadge(tx) {
  if (tx.online) return h("span", { class: "badge ok" }, "online");
  if (tx.status === "offline") return h("span", { class: "badge bad" }, "offline");
  return h("span", { class: "badge unknown" }, "unknown");
}

function txHref(site, tx) {
  return "#/tx/" + encodeURIComponent(site) + "/" + encodeURIComponent(tx);
}

function apiTx(site, tx) {
  return "/api/v1/transformers/" + encodeURIComponent(site) + "/" + encodeURIComponent(tx);
}

// Replace a container's children, keeping keyboard focus on the element with the same data-key.
function replace(container, ...children) {
  const active = document.activeElement;
  const key = active && container.contains(active) ? active.getAttribute("data-key") : null;
  container.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined));
  if (key) {
    const again = [...container.querySelectorAll("[data-key]")].find((el) => el.getAttribute("data-key") === key);
    if (again) again.focus();
  }
}

// ------------------------------------------------------------------ the API

class ApiError extends Error {
  constructor(status, code, detail) {
    super(detail || code || "HTTP " + status);
    this.status = status;
    this.code = code || "";
  }
}

const CSRF_KEY = "phasekit.csrf";

// The CSRF token lives in this tab's sessionStorage: useless without the HttpOnly session cookie, and a
// reload keeps it (the server keeps only its hash, so it cannot hand it out again).
const csrf = {
  get: () => sessionStorage.getItem(CSRF_KEY),
  set: (t) => sessionStorage.setItem(CSRF_KEY, t),
  clear: () => sessionStorage.removeItem(CSRF_KEY),
};

async function api(path, { method = "GET", body, signal } = {}) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET") {
    const token = csrf.get();
    if (token) headers["X-CSRF-Token"] = token;
  }
  const r = await fetch(path, {
    method, headers, signal, credentials: "same-origin", cache: "no-store",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!r.ok) {
    let e = {};
    try {
      e = await r.json();
    } catch (_) {
      // not JSON: the status says enough
    }
    const err = new ApiError(r.status, e.error, e.detail);
    if (r.status === 401 && !path.endsWith("/auth/login")) app.loggedOut();
    throw err;
  }
  return r.status === 204 ? null : r.json();
}

// ------------------------------------------------------------------ charts

// Round tick values: about n of them from 0 to at least max.
function niceTicks(max, n) {
  const raw = max / n;
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const norm = raw / mag;
  const step = (norm <= 1 ? 1 : norm <= 2 ? 2 : norm <= 2.5 ? 2.5 : norm <= 5 ? 5 : 10) * mag;
  const out = [];
  for (let v = 0; v <= max + step * 0.999; v += step) out.push(Math.round(v * 1e6) / 1e6);
  return out.length > 1 ? out : [0, step];
}

const TIME_STEPS = [900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800, 604800];

// A line chart in SVG: time on x, one or more series on y, marks (the balancer's moves) along the top.
// draw() makes the SVG for the figure's width; cursor(i) moves the crosshair without redrawing.
class Chart {
  constructor(figure, { unit, format, max0 = 1 }) {
    this.figure = figure;
    this.unit = unit;
    this.format = format;
    this.max0 = max0;
    this.data = null;
    this.cursorGroup = null;
  }

  set(data) {
    this.data = data;
    this.draw();
  }

  draw() {
    const d = this.data;
    if (!d) return;
    const width = Math.max(260, Math.floor(this.figure.clientWidth || 600));
    const height = width < 560 ? 180 : 230;
    const m = { l: 46, r: 10, t: 14, b: 26 };
    const pw = width - m.l - m.r;
    const ph = height - m.t - m.b;
    let max = 0;
    for (const line of d.lines) for (const v of line.values) if (v > max) max = v;
    const ticks = niceTicks(Math.max(max, this.max0) * 1.05, ph < 150 ? 3 : 4);
    const top = ticks[ticks.length - 1];
    const span = Math.max(1, d.to - d.from);
    const x = (t) => m.l + ((t - d.from) / span) * pw;
    const y = (v) => m.t + ph - (v / top) * ph;
    this.geom = { x, y, m, pw, ph, width, height };

    const grid = s("g", { class: "grid" });
    for (const v of ticks) {
      const yy = y(v).toFixed(1);
      grid.append(s("line", { x1: m.l, x2: width - m.r, y1: yy, y2: yy }));
      grid.append(s("text", { x: m.l - 6, y: yy, dy: "0.32em", "text-anchor": "end" }, this.format(v)));
    }
    const tz = -new Date().getTimezoneOffset() * 60;
    const step = TIME_STEPS.find((st) => span / st <= pw / 72) || 604800;
    for (let t = Math.ceil((d.from + tz) / step) * step - tz; t <= d.to; t += step) {
      const xx = x(t).toFixed(1);
      const date = new Date(t * 1000);
      const midnight = (t + tz) % 86400 === 0;
      const label = step >= 86400 ? fmtDate.format(date) : midnight ? fmtDay.format(date) : fmtClock.format(date);
      grid.append(s("line", { class: "v", x1: xx, x2: xx, y1: m.t, y2: m.t + ph }));
      grid.append(s("text", { x: xx, y: height - 8, "text-anchor": "middle" }, label));
    }

    const marks = s("g", { class: "marks" });
    for (const mk of d.marks || []) {
      if (mk.t < d.from || mk.t > d.to) continue;
      const xx = x(mk.t);
      marks.append(
        s("g", { class: "mark " + (mk.cls || "") },
          s("title", null, mk.text),
          s("line", { x1: xx.toFixed(1), x2: xx.toFixed(1), y1: m.t, y2: m.t + ph }),
          s("path", { d: `M${(xx - 5).toFixed(1)} 2 h10 l-5 8 z` })),
      );
    }

    const lines = s("g", { class: "lines" });
    const gap = (d.resolution || 60) * 2.5;
    for (const line of d.lines) {
      lines.append(s("path", { class: "line " + line.cls, d: linePath(d.t, line.values, x, y, gap, pw) }));
    }
    this.cursorGroup = s("g", { class: "cursor", visibility: "hidden" },
      s("line", { y1: m.t, y2: m.t + ph }),
      d.lines.map((line) => s("circle", { class: "dot " + line.cls, r: 3.5 })));
    const svg = s("svg", {
      class: "chart-svg", viewBox: `0 0 ${width} ${height}`, width, height, "aria-hidden": "true",
      focusable: "false",
    }, grid, marks, lines, this.cursorGroup);
    const old = this.figure.querySelector("svg");
    if (old) old.replaceWith(svg);
    else this.figure.prepend(svg);
    this.svg = svg;
  }

  // The index of the point nearest to a client x coordinate.
  indexAt(clientX) {
    const d = this.data;
    if (!d || !d.t.length || !this.svg) return -1;
    const r = this.svg.getBoundingClientRect();
    const { m, pw, width } = this.geom;
    const px = ((clientX - r.left) / r.width) * width;
    const t = d.from + ((px - m.l) / pw) * (d.to - d.from);
    let lo = 0;
    let hi = d.t.length - 1;
    while (hi - lo > 1) {
      const mid = (lo + hi) >> 1;
      if (d.t[mid] < t) lo = mid;
      else hi = mid;
    }
    return Math.abs(d.t[lo] - t) <= Math.abs(d.t[hi] - t) ? lo : hi;
  }

  cursor(i) {
    const g = this.cursorGroup;
    const d = this.data;
    if (!g || !d) return;
    if (i < 0 || i >= d.t.length) {
      g.setAttribute("visibility", "hidden");
      return;
    }
    const { x, y } = this.geom;
    const xx = x(d.t[i]).toFixed(1);
    g.setAttribute("visibility", "visible");
    const line = g.querySelector("line");
    line.setAttribute("x1", xx);
    line.setAttribute("x2", xx);
    g.querySelectorAll("circle").forEach((c, k) => {
      const v = d.lines[k].values[i];
      c.setAttribute("cx", xx);
      c.setAttribute("cy", isFinite(v) ? y(v).toFixed(1) : -10);
    });
  }
}

// The SVG path of one series; broken where data is missing; at most about four points per pixel column
// (first, lowest, highest, last), so a month of minutes draws as fast as a day and keeps its peaks.
function linePath(t, v, x, y, gap, pw) {
  const n = t.length;
  const parts = [];
  const dense = n > pw * 2;
  let pen = false;
  let col = null;
  let bucket = [];
  const flush = () => {
    if (!bucket.length) return;
    let lo = bucket[0];
    let hi = bucket[0];
    for (const p of bucket) {
      if (p[1] < lo[1]) lo = p;
      if (p[1] > hi[1]) hi = p;
    }
    const pts = [bucket[0], lo, hi, bucket[bucket.length - 1]].sort((a, b) => a[0] - b[0]);
    for (const p of pts) parts.push((pen ? "L" : "M") + p[2]), (pen = true);
    bucket = [];
  };
  for (let i = 0; i < n; i++) {
    const val = v[i];
    const broken = val === null || val === undefined || !isFinite(val) || (i > 0 && t[i] - t[i - 1] > gap);
    if (broken) {
      flush();
      pen = false;
      col = null;
      if (val === null || val === undefined || !isFinite(val)) continue;
    }
    const xx = x(t[i]);
    const p = [t[i], val, xx.toFixed(1) + " " + y(val).toFixed(1)];
    if (!dense) {
      parts.push((pen ? "L" : "M") + p[2]);
      pen = true;
      continue;
    }
    const c = Math.floor(xx);
    if (c !== col) {
      flush();
      col = c;
    }
    bucket.push(p);
  }
  flush();
  return parts.join("") || "M0 0";
}

// ------------------------------------------------------------------ the live stream

// One EventSource per tab; listeners get {alarms, audit, transformers} and, on every (re)connect, a
// "hello" after which they reload (what changed while the stream was down is not replayed).
const live = {
  source: null,
  listeners: new Set(),
  connectedOnce: false,
  start() {
    if (this.source) return;
    const src = new EventSource("/api/v1/live");
    this.source = src;
    this.status("connecting");
    src.addEventListener("hello", () => {
      this.status("live");
      const again = this.connectedOnce;
      this.connectedOnce = true;
      if (again) this.emit({ alarms: true, audit: true, transformers: "all", reconnect: true });
    });
    src.addEventListener("change", (ev) => {
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch (_) {
        return;
      }
      this.emit(msg);
    });
    src.addEventListener("end", (ev) => {
      let msg = {};
      try {
        msg = JSON.parse(ev.data);
      } catch (_) {
        // an end without a reason: reconnect
      }
      if (msg.reconnect === false) {
        this.stop();
        app.loggedOut();
      }
    });
    src.addEventListener("error", () => {
      if (this.source !== src) return;
      if (src.readyState === EventSource.CLOSED) {
        // Refused (401, 429...): EventSource does not retry by itself; look again later.
        this.source = null;
        this.status("off");
        clearTimeout(this.retry);
        this.retry = setTimeout(() => app.me && this.start(), 10000);
      } else {
        this.status("reconnecting");
      }
    });
  },
  stop() {
    clearTimeout(this.retry);
    if (this.source) this.source.close();
    this.source = null;
    this.connectedOnce = false;
    this.status("");
  },
  emit(msg) {
    for (const fn of [...this.listeners]) fn(msg);
  },
  status(state) {
    const el = document.getElementById("live");
    const text = { live: "Live", connecting: "Connecting…", reconnecting: "Reconnecting…", off: "Not live" }[state];
    el.className = "live " + (state || "none");
    el.textContent = text || "";
  },
};

// Run fn() now, and again after it finishes if asked meanwhile; never two at once, at most once a second.
function coalesced(fn) {
  let running = false;
  let again = false;
  let last = 0;
  const run = async () => {
    if (running) {
      again = true;
      return;
    }
    running = true;
    try {
      const wait = 1000 - (Date.now() - last);
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      last = Date.now();
      await fn();
    } catch (e) {
      // A view left while it reloaded aborts its requests; a 401 already shows the login.
      if (e.name !== "AbortError" && !(e instanceof ApiError && e.status === 401)) console.warn("refresh failed", e);
    } finally {
      running = false;
      if (again) {
        again = false;
        run();
      }
    }
  };
  return run;
}

// ------------------------------------------------------------------ views

function heading(text) {
  return h("h1", { tabindex: "-1" }, text);
}

function errorBox(e) {
  const text = e instanceof ApiError ? (e.status === 404 ? "Not found." : e.message) : "The server could not be reached.";
  return h("p", { class: "error", role: "alert" }, text);
}

function loginView(main, { message } = {}) {
  document.title = "Log in — phasekit";
  const err = h("p", { class: "error", role: "alert", id: "login-error" }, message || "");
  const name = h("input", { id: "login-name", name: "username", autocomplete: "username", required: true,
    maxlength: 64, autocapitalize: "none", spellcheck: "false" });
  const pw = h("input", { id: "login-password", name: "password", type: "password", autocomplete: "current-password",
    required: true, maxlength: 256 });
  const button = h("button", { type: "submit" }, "Log in");
  const form = h("form", { class: "login", "aria-describedby": "login-error" },
    h("p", { class: "field" }, h("label", { for: "login-name" }, "Name"), name),
    h("p", { class: "field" }, h("label", { for: "login-password" }, "Password"), pw),
    err, button);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    button.disabled = true;
    err.textContent = "";
    try {
      const r = await api("/api/v1/auth/login", { method: "POST", body: { name: name.value, password: pw.value } });
      csrf.set(r.csrf_token);
      app.loggedIn(r.me);
    } catch (e) {
      err.textContent = e instanceof ApiError && e.status === 429 ? "Too many attempts; wait a few minutes."
        : e instanceof ApiError && e.status === 401 ? "Wrong name or password." : "The server could not be reached.";
      pw.value = "";
      pw.focus();
    } finally {
      button.disabled = false;
    }
  });
  replace(main, h("section", { class: "narrow" }, heading("Log in"), form));
  name.focus();
  return {};
}

function fleetView(main, ctx) {
  document.title = "Fleet — phasekit";
  const summary = h("p", { class: "muted" }, "Loading…");
  const body = h("div");
  replace(main, heading("Fleet"), summary, body);
  const load = async () => {
    const r = await api("/api/v1/fleet", { signal: ctx.signal });
    const txs = r.transformers.slice().sort((a, b) =>
      (b.worst_alarm ? b.worst_alarm.severity : 0) - (a.worst_alarm ? a.worst_alarm.severity : 0)
      || (a.site + a.transformer).localeCompare(b.site + b.transformer));
    const online = txs.filter((t) => t.online).length;
    const alarmed = txs.filter((t) => t.worst_alarm).length;
    summary.textContent = `${txs.length} transformer${txs.length === 1 ? "" : "s"}, ${online} online, `
      + `${alarmed} with an active alarm.`;
    if (!txs.length) {
      replace(body, h("p", null, "No transformers yet: they appear when their Pi's data arrives."));
      return;
    }
    replace(body, h("table", { class: "cards" },
      h("caption", { class: "sr-only" }, "Transformers, worst alarm first"),
      h("thead", null, h("tr", null, ["Transformer", "State", "Worst active alarm", "Nodes", "Newest data",
        "Pi backlog"].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", null, txs.map((t) => h("tr", null,
        h("th", { scope: "row", "data-label": "Transformer" },
          h("a", { href: txHref(t.site, t.transformer), "data-key": "tx:" + t.site + "/" + t.transformer },
            t.name || t.transformer), h("span", { class: "sub" }, t.site + " / " + t.transformer)),
        h("td", { "data-label": "State" }, stateBadge(t)),
        h("td", { "data-label": "Worst active alarm" }, t.worst_alarm
          ? [severityBadge(t.worst_alarm.severity), " ", ALARM_TYPES[t.worst_alarm.type] || t.worst_alarm.type,
            t.worst_alarm.acknowledged ? h("span", { class: "sub" }, "acknowledged") : null]
          : h("span", { class: "muted" }, "none")),
        h("td", { "data-label": "Nodes", class: "num" }, String(t.nodes)),
        h("td", { "data-label": "Newest data" }, when(t.last_t_s)),
        h("td", { "data-label": "Pi backlog", class: "num" }, t.backlog === null ? "–" : String(t.backlog)))))));
  };
  const refresh = coalesced(load);
  return {
    first: load().catch((e) => replace(body, errorBox(e))),
    onChange: (msg) => {
      if (msg.alarms || msg.transformers === "all" || (msg.transformers && msg.transformers.length)) refresh();
    },
  };
}

// The alarm table with acknowledge and clear (for operators). A refresh waits while a form is open, so
// nobody loses a comment being typed.
function alarmList(container, { query, canAck, canClear, showObject = true, empty, status }) {
  let open = null;
  let pending = false;
  const render = (alarms) => {
    if (!alarms.length) {
      replace(container, h("p", { class: "muted" }, empty || "No alarms."));
      return;
    }
    const rows = [];
    for (const a of alarms) {
      const acked = a.acked_s !== null;
      const cleared = a.cleared_s !== null;
      const actions = [];
      if (canAck && !acked) actions.push(["ack", "Acknowledge"]);
      if (canClear && !cleared) actions.push(["clear", "Clear"]);
      const state = [cleared ? "cleared" : "active"];
      if (acked) state.push("acknowledged by " + a.acked_by);
      if (cleared) state.push((a.cleared_by === "system" ? "by the server" : "by " + a.cleared_by));
      const where = a.object_kind === "server" ? "this server"
        : a.transformer ? a.site + " / " + a.transformer + (a.node !== null ? " node " + a.node : "") : a.object;
      rows.push(h("tr", { id: "alarm-" + a.id, class: cleared ? "cleared" : "" },
        h("td", { "data-label": "Severity" }, severityBadge(a.severity)),
        h("th", { scope: "row", "data-label": "Alarm" }, ALARM_TYPES[a.type] || a.type,
          showObject ? h("span", { class: "sub" },
            a.transformer ? h("a", { href: txHref(a.site, a.transformer) }, where) : where) : null,
          a.ack_comment ? h("span", { class: "sub comment" }, "“" + a.ack_comment + "”") : null),
        h("td", { "data-label": "Raised" }, when(a.raised_s)),
        h("td", { "data-label": "State" }, state.join(", ")),
        h("td", { "data-label": "Actions", class: "actions" }, actions.map(([what, label]) =>
          h("button", { type: "button", class: "small", "data-key": what + ":" + a.id,
            "aria-label": label + " alarm " + a.id + ", " + (ALARM_TYPES[a.type] || a.type),
            onclick: () => openForm(a, what, label) }, label)))));
      if (open && open.id === a.id) rows.push(open.row);
    }
    replace(container, h("table", { class: "cards alarms" },
      h("thead", null, h("tr", null, ["Severity", "Alarm", "Raised", "State", "Actions"].map((c) =>
        h("th", { scope: "col" }, c)))),
      h("tbody", null, rows)));
  };
  let last = [];
  const openForm = (a, what, label) => {
    if (open) open.row.remove();
    const id = "comment-" + a.id;
    const text = h("textarea", { id, name: "comment", maxlength: 500, rows: 2 });
    const msg = h("p", { class: "error", role: "alert" });
    const submit = h("button", { type: "submit" }, label + " alarm " + a.id);
    const cancel = h("button", { type: "button", class: "quiet", onclick: () => close(what + ":" + a.id) }, "Cancel");
    const form = h("form", { class: "act" },
      h("label", { for: id }, "Comment (optional, kept in the alarm's history and the audit log)"), text, msg,
      h("p", { class: "buttons" }, submit, cancel));
    form.addEventListener("keydown", (ev) => {
      if (ev.key === "Escape") close(what + ":" + a.id);
    });
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      submit.disabled = true;
      try {
        await api("/api/v1/alarms/" + a.id + "/" + what, { method: "POST", body: { comment: text.value } });
        status((what === "ack" ? "Acknowledged" : "Cleared") + " alarm " + a.id + ".");
        open = null;
        await reload();
      } catch (e) {
        submit.disabled = false;
        msg.textContent = e instanceof ApiError && e.status === 409 ? "Someone else changed this alarm: " + e.message
          : e instanceof ApiError && e.status === 403 ? "Not allowed: " + e.message : errorText(e);
        if (e instanceof ApiError && e.status === 409) reload();
      }
    });
    const row = h("tr", { class: "act-row" }, h("td", { colspan: 5 }, form));
    open = { id: a.id, row };
    render(last);
    text.focus();
  };
  const close = (key) => {
    open = null;
    render(last);
    const b = container.querySelector(`[data-key="${CSS.escape(key)}"]`);
    if (b) b.focus();
    if (pending) {
      pending = false;
      reload();
    }
  };
  const reload = async () => {
    if (open) {
      pending = true;
      return;
    }
    const r = await api("/api/v1/alarms?" + query());
    last = r.alarms;
    render(last);
  };
  return { reload };
}

function errorText(e) {
  return e instanceof ApiError ? e.message : "The server could not be reached.";
}

function announcer() {
  const el = h("p", { class: "announce", role: "status", "aria-live": "polite" });
  return { el, say: (text) => (el.textContent = text) };
}

function alarmsView(main, ctx) {
  document.title = "Alarms — phasekit";
  const params = new URLSearchParams(ctx.query);
  let state = ["active", "unacked", "cleared", "all"].includes(params.get("state")) ? params.get("state") : "active";
  const select = h("select", { id: "alarm-state" },
    [["active", "Active"], ["unacked", "Not acknowledged"], ["cleared", "Cleared"], ["all", "All"]].map(([v, t]) =>
      h("option", { value: v, selected: v === state }, t)));
  const ann = announcer();
  const box = h("div", null, h("p", { class: "muted" }, "Loading…"));
  const system = app.me.role === "sysadmin";
  replace(main, heading(system ? "Server alarms" : "Alarms"),
    system ? h("p", { class: "muted" }, "The server's own alarms (tenants' alarms are theirs to see).") : null,
    h("p", { class: "toolbar" }, h("label", { for: "alarm-state" }, "Show"), select), ann.el, box);
  const list = alarmList(box, {
    query: () => "state=" + state + "&limit=200",
    canAck: app.can("alarm.ack"),
    canClear: app.can("alarm.clear"),
    empty: state === "active" ? "No active alarms." : "No alarms.",
    status: ann.say,
  });
  select.addEventListener("change", () => {
    state = select.value;
    history.replaceState(null, "", "#/alarms?state=" + state);
    list.reload().catch((e) => replace(box, errorBox(e)));
  });
  const refresh = coalesced(list.reload);
  return {
    first: list.reload().catch((e) => replace(box, errorBox(e))),
    onChange: (msg) => msg.alarms && refresh(),
  };
}

const RANGES = [
  { key: "24h", label: "24 h", span: 86400, resolution: 60 },
  { key: "7d", label: "7 days", span: 7 * 86400, resolution: 900 },
  { key: "30d", label: "30 days", span: 30 * 86400, resolution: 3600 },
];

// What the transformer page needs, asked for at once (before the page knows who is logged in, so the
// first render waits for one round trip, not two).
function loadTransformer(site, tx, range, serverOffset, signal) {
  const base = apiTx(site, tx);
  let q = "resolution=" + range.resolution;
  let mq = "";
  if (range.span !== 86400 && serverOffset !== null) {
    const from = Math.floor(Date.now() / 1000 + serverOffset - range.span);
    q += "&from=" + from;
    mq = "?from=" + from;
  }
  const opt = { signal };
  const out = {
    tx: api(base, opt),
    series: api(base + "/series?" + q, opt),
    moves: api(base + "/moves" + mq, opt),
    nodes: api(base + "/nodes", opt),
  };
  // Whoever awaits them handles a failure; one left un-awaited after another failed must not be "unhandled".
  for (const p of Object.values(out)) p.catch(() => {});
  return out;
}

function txView(main, ctx) {
  const [site, tx] = ctx.args;
  document.title = site + " / " + tx + " — phasekit";
  let range = RANGES[0];
  let serverOffset = null; // server time minus this browser's, from the series' "to"
  let series = null;
  let moves = [];
  const title = heading(site + " / " + tx);
  const meta = h("p", { class: "meta" });
  const ann = announcer();
  const rangeButtons = RANGES.map((r) => h("button", {
    type: "button", class: "small", "aria-pressed": r === range ? "true" : "false",
    onclick: () => setRange(r), "data-key": "range:" + r.key,
  }, r.label));
  const chartI = h("figure", { class: "chart", tabindex: "0", "aria-describedby": "readout",
    "aria-label": "Phase and neutral currents; arrow keys step through the points" },
  h("figcaption", { class: "sr-only", id: "cap-i" }, ""));
  const chartC = h("figure", { class: "chart small-chart", tabindex: "0", "aria-describedby": "readout",
    "aria-label": "Current unbalance factor; arrow keys step through the points" },
  h("figcaption", { class: "sr-only", id: "cap-c" }, ""));
  const legend = h("ul", { class: "legend", "aria-label": "Legend" },
    [["a", "Phase A"], ["b", "Phase B"], ["c", "Phase C"], ["n", "Neutral"], ["cuf", "CUF (lower chart)"],
      ["move", "Balancer's move"]].map(([cls, text]) => h("li", null, h("span", { class: "key " + cls }), text)));
  const readout = h("p", { class: "readout", id: "readout", "aria-live": "polite" }, "");
  const movesBox = h("details", { class: "moves" }, h("summary", null, "Moves"));
  const exports = h("p", { class: "exports" });
  const alarmsBox = h("div", null, h("p", { class: "muted" }, "Loading…"));
  const nodesBox = h("div", null, h("p", { class: "muted" }, "Loading…"));
  const nodesHeading = h("h2", { id: "h-nodes" }, "Nodes");
  const iChart = new Chart(chartI, { unit: "A", format: (v) => v + " A", max0: 1 });
  const cChart = new Chart(chartC, { unit: "%", format: (v) => Math.round(v * 100) + " %", max0: 0.05 });
  replace(main,
    h("nav", { class: "crumbs", "aria-label": "Breadcrumb" }, h("a", { href: "#/fleet" }, "Fleet"), " › ",
      h("span", { "aria-current": "page" }, site + " / " + tx)),
    title, meta, ann.el,
    h("section", { "aria-labelledby": "h-currents" },
      h("div", { class: "toolbar" }, h("h2", { id: "h-currents" }, "Currents and unbalance"),
        h("div", { role: "group", "aria-label": "Time range", class: "range" }, rangeButtons)),
      chartI, chartC, legend, readout, movesBox, exports),
    h("section", { "aria-labelledby": "h-alarms" }, h("h2", { id: "h-alarms" }, "Active alarms"), alarmsBox),
    h("section", { "aria-labelledby": "h-nodes" }, nodesHeading, nodesBox));

  const alarms = app.can("alarm.read") ? alarmList(alarmsBox, {
    query: () => "state=active&site=" + encodeURIComponent(site) + "&transformer=" + encodeURIComponent(tx),
    canAck: app.can("alarm.ack"),
    canClear: app.can("alarm.clear"),
    showObject: true,
    empty: "No active alarms.",
    status: ann.say,
  }) : null;

  const showTx = (t) => {
    title.textContent = t.name ? t.name + " (" + site + " / " + tx + ")" : site + " / " + tx;
    replace(meta, stateBadge(t), " ",
      t.worst_alarm ? [severityBadge(t.worst_alarm.severity, "alarm"), " "] : null,
      h("span", null, "newest data ", when(t.last_t_s)),
      t.fw ? h("span", null, " · Pi " + t.fw) : null,
      t.backlog !== null ? h("span", null, " · backlog " + t.backlog) : null);
  };

  let cursorIndex = -1;
  const showCursor = (i) => {
    cursorIndex = i;
    iChart.cursor(i);
    cChart.cursor(i);
    if (!series || i < 0 || i >= series.t_s.length) return;
    readout.textContent = fmtMinute.format(new Date(series.t_s[i] * 1000)) + ": A " + amps(series.i_a[i])
      + ", B " + amps(series.i_b[i]) + ", C " + amps(series.i_c[i]) + ", neutral " + amps(series.i_n[i])
      + ", CUF " + percent(series.cuf[i]);
  };
  for (const [fig, chart] of [[chartI, iChart], [chartC, cChart]]) {
    fig.addEventListener("pointermove", (ev) => showCursor(chart.indexAt(ev.clientX)));
    fig.addEventListener("keydown", (ev) => {
      if (!series || !series.t_s.length) return;
      const n = series.t_s.length;
      const stepKeys = { ArrowLeft: -1, ArrowRight: 1, PageUp: -60, PageDown: 60 };
      let i = cursorIndex < 0 ? n - 1 : cursorIndex;
      if (ev.key in stepKeys) i = Math.min(n - 1, Math.max(0, i + stepKeys[ev.key]));
      else if (ev.key === "Home") i = 0;
      else if (ev.key === "End") i = n - 1;
      else return;
      ev.preventDefault();
      showCursor(i);
    });
  }

  const drawCharts = () => {
    const sr = series;
    const marks = moves.map((mv) => ({
      t: mv.t_s,
      cls: mv.outcome === "DONE" ? "done" : "other",
      text: fmtMinute.format(new Date(mv.t_s * 1000)) + ": node " + mv.node + " to phase " + (mv.to_phase || "?")
        + " (" + (mv.outcome || "no answer") + ")",
    }));
    const common = { t: sr.t_s, from: sr.from, to: sr.to, resolution: sr.resolution, marks };
    iChart.set(Object.assign({}, common, {
      lines: [{ cls: "a", values: sr.i_a }, { cls: "b", values: sr.i_b }, { cls: "c", values: sr.i_c },
        { cls: "n", values: sr.i_n }],
    }));
    cChart.set(Object.assign({}, common, { lines: [{ cls: "cuf", values: sr.cuf }] }));
    const n = sr.t_s.length;
    const peak = (col) => col.reduce((m, v, i) => (v > col[m] ? i : m), 0);
    const desc = n ? `${range.label} at ${sr.resolution / 60} min steps. Latest (${fmtMinute.format(new Date(sr.t_s[n - 1] * 1000))}): `
      + `A ${amps(sr.i_a[n - 1])}, B ${amps(sr.i_b[n - 1])}, C ${amps(sr.i_c[n - 1])}, neutral ${amps(sr.i_n[n - 1])}, `
      + `CUF ${percent(sr.cuf[n - 1])}. Highest neutral ${amps(sr.i_n[peak(sr.i_n)])}; highest CUF `
      + `${percent(sr.cuf[peak(sr.cuf)])}.` : `No data in the last ${range.label}.`;
    chartI.querySelector("figcaption").textContent = desc;
    chartC.querySelector("figcaption").textContent = "Current unbalance factor. " + desc;
    if (cursorIndex >= 0) showCursor(Math.min(cursorIndex, n - 1));
    else readout.textContent = n ? desc : "No data in this range.";
  };

  const showMoves = () => {
    const done = moves.filter((m) => m.outcome === "DONE").length;
    replace(movesBox, h("summary", null, `${moves.length} move${moves.length === 1 ? "" : "s"} in this range (${done} done)`),
      moves.length ? h("ol", null, moves.slice(-200).reverse().map((mv) => h("li", null,
        when(mv.t_s, "abs"), ": node " + mv.node + " to phase " + (mv.to_phase || "?") + ", "
        + (mv.outcome || "no answer") + (mv.phase_after ? ", now on " + mv.phase_after : "")))) : null);
  };

  const showExports = () => {
    const base = apiTx(site, tx) + "/export.csv?from=" + series.from + "&to=" + series.to;
    replace(exports, "Download CSV for this range: ",
      h("a", { href: base + "&what=series", download: "" }, "the series"), " · ",
      h("a", { href: base + "&what=readings", download: "" }, "every node's readings"));
  };

  const showNodes = (nodes) => {
    nodesHeading.textContent = "Nodes (" + nodes.length + ")";
    if (!nodes.length) {
      replace(nodesBox, h("p", { class: "muted" }, "No nodes seen yet."));
      return;
    }
    replace(nodesBox, h("table", { class: "cards nodes" },
      h("thead", null, h("tr", null, ["Node", "Phase", "Last reading", "Firmware", "Key generation", "Status"].map((c) =>
        h("th", { scope: "col" }, c)))),
      h("tbody", null, nodes.map((n) => h("tr", null,
        h("th", { scope: "row", "data-label": "Node" }, String(n.addr)),
        h("td", { "data-label": "Phase" }, n.phase ? h("span", { class: "phase " + n.phase.toLowerCase() }, n.phase) : "–"),
        h("td", { "data-label": "Last reading" }, when(n.last_t_s)),
        h("td", { "data-label": "Firmware" }, n.fw || "–"),
        h("td", { "data-label": "Key generation", class: "num" }, String(n.generation)),
        h("td", { "data-label": "Status", class: "num" }, n.status === null ? "–" : n.status === 0 ? "ok"
          : "0x" + n.status.toString(16)))))));
  };

  const acceptSeries = (sr) => {
    series = sr;
    serverOffset = sr.to - Date.now() / 1000;
  };

  const loadAll = async (pre) => {
    const p = pre || loadTransformer(site, tx, range, serverOffset, ctx.signal);
    const [t, sr, mv] = await Promise.all([p.tx, p.series, p.moves]);
    showTx(t);
    acceptSeries(sr);
    moves = mv.moves;
    drawCharts();
    app.mark("chart-drawn");
    showMoves();
    showExports();
    showNodes((await p.nodes).nodes);
  };

  // Live: only what is new since the newest point is fetched and appended.
  const update = async () => {
    if (!series) return;
    const base = apiTx(site, tx);
    const last = series.t_s.length ? series.t_s[series.t_s.length - 1] : series.from;
    const [t, add, mv, nodes] = await Promise.all([
      api(base, ctx), api(base + "/series?resolution=" + series.resolution + "&from=" + last, ctx),
      api(base + "/moves?from=" + last, ctx), api(base + "/nodes", ctx)]);
    showTx(t);
    const keep = series.t_s.findIndex((x) => x >= (add.t_s.length ? add.t_s[0] : Infinity));
    const cut = keep < 0 ? series.t_s.length : keep;
    const start = add.to - range.span;
    const merged = { from: start, to: add.to, resolution: series.resolution };
    for (const col of ["t_s", "i_a", "i_b", "i_c", "i_n", "cuf"]) merged[col] = series[col].slice(0, cut).concat(add[col]);
    const first = merged.t_s.findIndex((x) => x >= start);
    for (const col of ["t_s", "i_a", "i_b", "i_c", "i_n", "cuf"]) merged[col] = merged[col].slice(Math.max(0, first));
    acceptSeries(merged);
    moves = moves.filter((m) => m.t_s >= start && m.t_s < last).concat(mv.moves);
    drawCharts();
    showMoves();
    showExports();
    showNodes(nodes.nodes);
  };

  const setRange = (r) => {
    range = r;
    rangeButtons.forEach((b, i) => b.setAttribute("aria-pressed", RANGES[i] === r ? "true" : "false"));
    loadAll().catch((e) => ann.say(errorText(e)));
  };

  let resizing = 0;
  const ro = new ResizeObserver(() => {
    cancelAnimationFrame(resizing);
    resizing = requestAnimationFrame(() => {
      iChart.draw();
      cChart.draw();
      if (cursorIndex >= 0) showCursor(cursorIndex);
    });
  });
  ro.observe(chartI);
  ctx.signal.addEventListener("abort", () => ro.disconnect());

  const refreshData = coalesced(update);
  const refreshAlarms = alarms ? coalesced(alarms.reload) : null;
  return {
    first: Promise.all([
      loadAll(ctx.prefetch).catch((e) => {
        if (e.name !== "AbortError") meta.replaceWith(errorBox(e));
      }),
      alarms ? alarms.reload().catch((e) => replace(alarmsBox, errorBox(e))) : null,
    ]),
    onChange: (msg) => {
      const mine = msg.transformers === "all" || (msg.transformers || []).includes(site + "/" + tx);
      if (mine) refreshData();
      if (msg.alarms && refreshAlarms) {
        refreshAlarms();
        if (!mine) refreshData();
      }
    },
  };
}

function auditView(main, ctx) {
  document.title = "Audit log — phasekit";
  const field = (id, label, attrs) => h("p", { class: "field" }, h("label", { for: id }, label), h("input", Object.assign({ id, name: id }, attrs)));
  const form = h("form", { class: "filters", role: "search", "aria-label": "Search the audit log" },
    field("audit-from", "From", { type: "datetime-local" }),
    field("audit-to", "To", { type: "datetime-local" }),
    field("audit-object", "Object (exact, or a prefix ending in *)", { maxlength: 256, placeholder: "alarm:*" }),
    field("audit-action", "Action", { maxlength: 256, placeholder: "alarm.ack", list: "audit-actions" }),
    h("datalist", { id: "audit-actions" }, ["login.success", "login.failed", "login.refused", "alarm.ack", "alarm.clear",
      "command.request", "command.refused_at_pi", "account.add", "account.role", "account.revoke", "key.add",
      "key.revoke", "transformer.settings", "site.assign", "token.reuse"].map((a) => h("option", { value: a }))),
    h("p", { class: "buttons" }, h("button", { type: "submit" }, "Search")));
  const ann = announcer();
  const box = h("div", null, h("p", { class: "muted" }, "Loading…"));
  const more = h("p");
  replace(main, heading("Audit log"), h("p", { class: "muted" },
    "Every entry is hash-chained to the one before it; `phasekit server audit verify` checks the whole chain."),
  form, ann.el, box, more);
  let filters = "";
  let paged = false;
  let rows = [];
  const toS = (id) => {
    const v = document.getElementById(id).value;
    return v ? Math.floor(new Date(v).getTime() / 1000) : null;
  };
  const change = (e) => {
    const b = e.before;
    const a = e.after;
    if (b && a && typeof b === "object" && typeof a === "object" && !Array.isArray(a)) {
      const keys = Object.keys(a).filter((k) => JSON.stringify(a[k]) !== JSON.stringify(b[k]));
      if (keys.length) return keys.slice(0, 6).map((k) => k + ": " + short(b[k], k) + " → " + short(a[k], k)).join("; ");
    }
    return a !== null && a !== undefined ? short(a) : "";
  };
  const render = (next) => {
    if (!rows.length) {
      replace(box, h("p", { class: "muted" }, "No entries."));
      replace(more);
      return;
    }
    replace(box, h("table", { class: "cards audit" },
      h("thead", null, h("tr", null, ["Time", "Action", "Object", "Actor", "Change"].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", null, rows.map((e) => h("tr", { "data-seq": e.seq },
        h("td", { "data-label": "Time" }, when(e.t_s, "abs")),
        h("th", { scope: "row", "data-label": "Action" }, e.action, h("span", { class: "sub" }, "#" + e.seq)),
        h("td", { "data-label": "Object", class: "wrap" }, e.object),
        h("td", { "data-label": "Actor" }, e.actor, h("span", { class: "sub" }, "from " + e.source)),
        h("td", { "data-label": "Change", class: "wrap" }, change(e),
          h("details", null, h("summary", null, "Before and after"),
            h("pre", null, "before: " + JSON.stringify(e.before, null, 1) + "\nafter: " + JSON.stringify(e.after, null, 1)
              + "\nhash: " + e.hash))))))));
    replace(more, next ? h("button", { type: "button", class: "quiet", onclick: () => load(next) }, "Older entries") : null);
  };
  const load = async (before) => {
    const q = filters + (before ? "&before=" + before : "");
    const r = await api("/api/v1/audit?limit=100" + q, ctx);
    paged = !!before;
    rows = before ? rows.concat(r.entries) : r.entries;
    render(r.next_before);
    if (before) ann.say(r.entries.length + " older entries loaded.");
  };
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const p = new URLSearchParams();
    const from = toS("audit-from");
    const to = toS("audit-to");
    if (from !== null) p.set("from", from);
    if (to !== null) p.set("to", to);
    for (const k of ["object", "action"]) {
      const v = document.getElementById("audit-" + k).value.trim();
      if (v) p.set(k, v);
    }
    filters = p.toString() ? "&" + p.toString() : "";
    load().then(() => ann.say(rows.length + " entries.")).catch((e) => ann.say(errorText(e)));
  });
  const refresh = coalesced(() => (paged ? Promise.resolve() : load()));
  return {
    first: load().catch((e) => replace(box, errorBox(e))),
    onChange: (msg) => msg.audit && refresh(),
  };
}

// A value of an audit entry in a few words; times (keys ending in _s) as dates.
function short(v, key = "") {
  if (key.endsWith("_s") && typeof v === "number" && v > 1e8) return fmtFull.format(new Date(v * 1000));
  const text = typeof v === "string" ? v : JSON.stringify(v);
  return text === undefined ? "–" : text.length > 80 ? text.slice(0, 79) + "…" : text;
}

function nothingView(main) {
  document.title = "phasekit";
  replace(main, heading("Nothing to show here"), h("p", null,
    `You are logged in as ${app.me.actor} (${ROLE_NAMES[app.me.role] || app.me.role}). This page shows the fleet, `
    + "alarms and the audit log to the roles that may read them; accounts and API keys are managed through the "
    + "API or `phasekit server`."));
  return {};
}

// ------------------------------------------------------------------ the app: who is logged in, routing

const VIEWS = {
  fleet: { fn: fleetView, perm: "fleet.read" },
  tx: { fn: txView, perm: "fleet.read" },
  alarms: { fn: alarmsView, perm: "alarm.read" },
  audit: { fn: auditView, perm: "audit.read" },
};

function parseRoute(hash) {
  const [path, query] = (hash.replace(/^#/, "") || "/").split("?");
  const parts = path.split("/").filter(Boolean).map((p) => {
    try {
      return decodeURIComponent(p);
    } catch (_) {
      return "";
    }
  });
  return { name: parts[0] || "", args: parts.slice(1), query: query || "" };
}

const app = {
  me: null,
  pendingPrefetch: undefined,
  view: null,
  controller: null,
  marked: false,
  firstView: true,

  can(perm) {
    return !!this.me && this.me.permissions.includes(perm);
  },

  // A Performance API mark, once per page load (the first-render measurement reads it).
  mark(name) {
    if (name === "chart-drawn") {
      if (this.marked) return;
      this.marked = true;
    }
    performance.mark("phasekit:" + name);
  },

  defaultRoute() {
    for (const name of ["fleet", "alarms", "audit"]) if (this.can(VIEWS[name].perm)) return "#/" + name;
    return "#/home";
  },

  loggedIn(me) {
    this.me = me;
    document.getElementById("who").textContent = me.actor.replace(/^user:/, "") + " · " + (ROLE_NAMES[me.role] || me.role);
    const logout = document.getElementById("logout");
    logout.hidden = false;
    const nav = document.getElementById("nav");
    nav.hidden = false;
    for (const a of nav.querySelectorAll("a[data-view]")) {
      const v = a.getAttribute("data-view");
      a.hidden = !this.can(VIEWS[v].perm);
      if (v === "alarms" && me.role === "sysadmin") a.textContent = "Server alarms";
    }
    live.start();
    this.route();
  },

  loggedOut(message) {
    if (!this.me && this.view && this.view.login) return;
    this.me = null;
    csrf.clear();
    live.stop();
    document.getElementById("nav").hidden = true;
    document.getElementById("logout").hidden = true;
    document.getElementById("who").textContent = "";
    this.show(() => loginView(document.getElementById("main"), { message: message || "" }), true);
  },

  show(make, login = false) {
    if (this.controller) this.controller.abort();
    this.controller = new AbortController();
    this.view = Object.assign({ login }, make(this.controller.signal) || {});
  },

  route() {
    if (!this.me) return;
    const r = parseRoute(location.hash);
    // Data asked for before the page knew who is logged in: for the first view only.
    const prefetch = this.pendingPrefetch;
    this.pendingPrefetch = undefined;
    const spec = VIEWS[r.name];
    if (!spec && r.name !== "home") {
      location.replace(this.defaultRoute());
      return;
    }
    const main = document.getElementById("main");
    for (const a of document.querySelectorAll("#nav a[data-view]")) {
      if (a.getAttribute("data-view") === r.name) a.setAttribute("aria-current", "page");
      else a.removeAttribute("aria-current");
    }
    if (spec && !this.can(spec.perm)) {
      this.show(() => {
        replace(main, heading("Not allowed"), h("p", null, "Your role cannot see this page."));
        return {};
      });
      return;
    }
    const focusHeading = !this.firstView;
    this.firstView = false;
    this.show((signal) => {
      if (!spec) return nothingView(main);
      return spec.fn(main, { signal, args: r.args, query: r.query, prefetch });
    });
    if (focusHeading) {
      const h1 = main.querySelector("h1");
      if (h1) h1.focus();
    }
  },

  async start() {
    const r = parseRoute(location.hash);
    // Ask for the transformer's data together with "who am I": one round trip before the first chart.
    let prefetch;
    if (r.name === "tx" && r.args.length === 2) {
      prefetch = loadTransformer(r.args[0], r.args[1], RANGES[0], null, undefined);
    }
    let me;
    try {
      me = await api("/api/v1/auth/me");
    } catch (e) {
      if (!(e instanceof ApiError && e.status === 401)) {
        replace(document.getElementById("main"), errorBox(e));
      }
      return;
    }
    this.me = me;
    this.pendingPrefetch = prefetch;
    this.loggedIn(me);
  },
};

// The views' share of the live stream: the current view decides what to reload.
live.listeners.add((msg) => {
  if (app.view && app.view.onChange) app.view.onChange(msg);
});

window.addEventListener("hashchange", () => app.route());

document.getElementById("logout").addEventListener("click", async () => {
  try {
    await api("/api/v1/auth/logout", { method: "POST" });
  } catch (_) {
    // logged out either way
  }
  app.loggedOut("You are logged out.");
});

document.getElementById("skip").addEventListener("click", (ev) => {
  ev.preventDefault();
  document.getElementById("main").focus();
});

// Relative times ("5 min ago") kept current.
setInterval(() => {
  for (const el of document.querySelectorAll("time[data-rel]")) el.textContent = ago(Number(el.getAttribute("data-rel")));
}, 30000);

app.start();
