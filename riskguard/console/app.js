// riskguard web console: polls /v1/status every POLL_MS (at most 1 s behind) and offers
// the actions the signed-in person's role allows, each behind a confirmation naming the
// scope. The token lives in sessionStorage (this tab only) and travels only in the
// Authorization header: never in a URL or a cookie. All text is set with textContent.
"use strict";

const POLL_MS = 500;
const STALE_MS = 2500;
const TOKEN_KEY = "riskguard.token";

const $ = (id) => document.getElementById(id);
let me = null; // {name, role, may, four_eyes}
let lastOk = 0;
let timer = null;
let pendingAction = null;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k.startsWith("data-")) node.setAttribute(k, v);
    else if (k === "title") node.title = v;
    else node[k] = v;
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

async function api(method, path, body) {
  const headers = { Authorization: "Bearer " + token() };
  const init = { method, headers, cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const resp = await fetch(path, init);
  let data = {};
  try {
    data = await resp.json();
  } catch (e) {
    data = { error: "the server did not answer JSON (" + resp.status + ")" };
  }
  return { status: resp.status, data };
}

function seconds(ms) {
  if (ms === null || ms === undefined) return "–";
  if (ms < 10000) return (ms / 1000).toFixed(1) + " s";
  if (ms < 120000) return Math.round(ms / 1000) + " s";
  const rest = Math.round((ms % 60000) / 1000);
  return Math.floor(ms / 60000) + " min" + (rest ? " " + rest + " s" : "");
}

function utc(ns) {
  if (ns === null || ns === undefined || ns < 0) return "–";
  const d = new Date(Math.floor(ns / 1e6));
  return d.toISOString().replace("T", " ").replace("Z", "");
}

function who(tr) {
  if (tr.kind !== "manual") return "riskguard";
  return tr.approved_by ? tr.operator + ", approved by " + tr.approved_by : tr.operator;
}

function stateBadge(state) {
  return el("span", { class: "state " + state.toLowerCase() }, state.replace("_", "-"));
}

function may(action) {
  return me !== null && me.may.includes(action);
}

function fourEyes(scope) {
  const level = scope === "firm" ? "firm" : scope.split(":")[0];
  return me !== null && me.four_eyes.includes(level);
}

// Rows are patched in place where the table keeps its shape (same rows, same keys): a
// cell is replaced only when its content changed, so a button under the operator's
// pointer is not swapped for a copy between mouse-down and mouse-up by the next poll
// (which lost the click).
function sameRow(a, b) {
  return (
    a.cells.length === b.cells.length &&
    a.getAttribute("data-scope") === b.getAttribute("data-scope") &&
    a.getAttribute("data-request") === b.getAttribute("data-request")
  );
}

function fill(tableId, rows, noneId) {
  const body = $(tableId).tBodies[0];
  const old = Array.from(body.rows);
  if (old.length === rows.length && rows.every((row, i) => sameRow(old[i], row))) {
    rows.forEach((row, i) => {
      const kept = old[i];
      if (kept.className !== row.className) kept.className = row.className;
      Array.from(row.cells).forEach((cell, j) => {
        if (kept.cells[j].outerHTML !== cell.outerHTML) kept.replaceChild(cell, kept.cells[j]);
      });
    });
  } else {
    body.replaceChildren(...rows);
  }
  $(tableId).hidden = rows.length === 0 && Boolean(noneId);
  if (noneId) $(noneId).hidden = rows.length > 0;
}

// ---- rendering -------------------------------------------------------------------------
function renderHeader(s) {
  const failing = Object.entries(s.checks).filter(([, ok]) => !ok).map(([k]) => k);
  const badge = $("readiness");
  badge.textContent = "riskguard " + (s.ready ? "READY" : "NOT READY");
  badge.className = "badge " + (s.ready ? "ready" : "not-ready");
  const trading = $("trading");
  const firm = s.standing.firm;
  const count = Object.keys(s.standing).length;
  if (firm) {
    trading.textContent = "FIRM " + firm.to.replace("_", "-");
    trading.className = "badge trading-halted";
  } else if (count) {
    trading.textContent = count + " scope" + (count > 1 ? "s" : "") + " halted or reduce-only";
    trading.className = "badge trading-reduce";
  } else {
    trading.textContent = "trading ACTIVE";
    trading.className = "badge trading-active";
  }
  $("instance").textContent = s.instance + " · v" + s.version;
  $("checks-box").hidden = failing.length === 0;
  $("failing").textContent = failing.join(", ");
  const halted = Object.keys(s.standing).length;
  document.title = (halted ? halted + " standing · " : "") + "riskguard " + s.instance;
}

function renderStanding(s) {
  const scopes = Object.keys(s.standing).sort((a, b) => {
    const order = (x) => (x === "firm" ? 0 : ["account", "strategy", "symbol"].indexOf(x.split(":")[0]) + 1);
    return order(a) - order(b) || a.localeCompare(b);
  });
  const rows = scopes.map((scope) => {
    const tr = s.standing[scope];
    const by = who(tr);
    const actions = el("td", { class: "actions" });
    if (may("resume")) {
      const pending = s.approvals.some((p) => p.scope === scope);
      const label = pending ? "Resume pending" : fourEyes(scope) ? "Request resume…" : "Resume…";
      const button = el("button", { type: "button", class: "act", disabled: pending }, label);
      button.setAttribute("data-scope", scope);
      button.addEventListener("click", () => askResume(scope));
      actions.append(button);
    }
    return el(
      "tr",
      { class: "row-" + tr.to.toLowerCase(), "data-scope": scope },
      el("td", { class: "scope" }, scope),
      el("td", {}, stateBadge(tr.to)),
      el("td", { class: "why" }, tr.evidence),
      el("td", { class: "time" }, tr.at.replace(" UTC", "")),
      el("td", {}, by),
      actions,
    );
  });
  $("standing-count").textContent = rows.length ? String(rows.length) : "";
  fill("standing", rows, "standing-none");
}

function renderApprovals(s) {
  const levels = s.four_eyes.levels;
  $("four-eyes-note").textContent = levels.length
    ? "Four-eyes: a resume of " + levels.join(" or ") + " scopes needs a second risk-admin, within " +
      seconds(s.four_eyes.approval_timeout_s * 1000) + "."
    : "Four-eyes is off: any risk-admin resumes alone.";
  const rows = s.approvals.map((p) => {
    const actions = el("td", { class: "actions" });
    if (me.name === p.requested_by) {
      actions.append(el("span", { class: "waiting" }, "your request: another risk-admin approves"));
    }
    if (may("approve") && me.name !== p.requested_by && !me.break_glass) {
      const ok = el("button", { type: "button", class: "act primary" }, "Approve…");
      ok.setAttribute("data-request", p.request_id);
      ok.addEventListener("click", () => askApprove(p));
      actions.append(ok);
    }
    if (may("approve")) {
      const off = el("button", { type: "button", class: "act" }, "Withdraw…");
      off.addEventListener("click", () => askWithdraw(p));
      actions.append(off);
    }
    return el(
      "tr",
      { "data-request": p.request_id },
      el("td", { class: "mono" }, p.request_id),
      el("td", { class: "scope" }, p.scope),
      el("td", {}, p.requested_by),
      el("td", { class: "why" }, p.reason),
      el("td", { class: "time" }, p.requested_at.replace(" UTC", "")),
      el("td", {}, seconds((p.expires_ns - s.now_ns) / 1e6)),
      actions,
    );
  });
  $("approvals-count").textContent = rows.length ? String(rows.length) : "";
  fill("approvals", rows, "approvals-none");
}

function renderFeeds(s) {
  const last = s.last_event_ns;
  $("last-event").textContent = last
    ? "Latest event applied " + seconds((s.now_ns - last) / 1e6) + " ago; " +
      s.events_applied.toLocaleString("en") + " applied, " + s.bad_events.toLocaleString("en") + " bad."
    : "No event applied yet.";
  const sources = (s.sources || []).map((src) => {
    const over = src.limit_ms !== null && src.silent_ms !== null && src.silent_ms > src.limit_ms;
    return el(
      "tr",
      { class: over ? "bad" : "" },
      el("td", {}, src.source),
      el("td", {}, src.last_heard_ns === null ? "never heard" : seconds(src.silent_ms)),
      el("td", {}, src.limit_ms === null ? "–" : seconds(src.limit_ms) + " (" + src.rule + ")"),
      el("td", { class: "time" }, utc(src.last_heard_ns)),
    );
  });
  fill("sources", sources.length ? sources : [el("tr", {}, el("td", { colSpan: 4, class: "muted" }, "no heartbeat source seen"))]);
  const lag = (s.consumer_lag || []).map((p) =>
    el("tr", { class: p.messages > 1000 ? "bad" : "" }, el("td", {}, p.topic + " / " + p.partition), el("td", {}, p.messages.toLocaleString("en"))),
  );
  fill("lag", lag.length ? lag : [el("tr", {}, el("td", { colSpan: 2, class: "muted" }, "no partition assigned"))]);
}

function renderNotifiers(s) {
  const rows = (s.notifiers || []).map((n) =>
    el(
      "tr",
      { class: n.failing ? "bad" : "" },
      el("td", {}, n.sink + " (" + n.kind + ")"),
      el(
        "td",
        { title: n.last_error || "" },
        n.failing ? "FAILING" : "ok",
        n.failing ? el("span", { class: "detail" }, n.last_error) : null,
      ),
      el("td", {}, n.delivered),
      el("td", {}, n.failures),
      el("td", {}, n.queued),
    ),
  );
  fill("notifiers", rows.length ? rows : [el("tr", {}, el("td", { colSpan: 5, class: "muted" }, "no notifier configured"))]);
  const limits = s.limits || {};
  const users = s.users || {};
  const roles = users.roles || {};
  const items = [
    ["Limits", limits.source + " · " + limits.rules + (limits.rules === 1 ? " rule" : " rules") + " · sha256 " + String(limits.sha256 || "").slice(0, 12)],
    ["Last limits reload", limits.last_reload_error ? "REJECTED (old limits stay): " + limits.last_reload_error : "ok"],
    ["Users", users.file ? users.file + " · " + Object.entries(roles).map(([r, n]) => n + " " + r).join(", ") : "no users file"],
    ["Last users reload", users.last_reload_error ? "REJECTED (old users stay): " + users.last_reload_error : "ok"],
  ];
  $("config").replaceChildren(
    ...items.flatMap(([k, v]) => [el("dt", {}, k), el("dd", { class: v.startsWith("REJECTED") ? "error" : "" }, v)]),
  );
}

function renderTransitions(s) {
  const all = s.transitions || [];
  const changes = all.filter((tr) => tr.kind !== "alert").map((tr) =>
    el(
      "tr",
      { class: tr.to === "ACTIVE" ? "" : "row-" + tr.to.toLowerCase() },
      el("td", { class: "time" }, tr.at.replace(" UTC", "")),
      el("td", { class: "scope" }, tr.scope),
      el("td", {}, tr.from + " → " + tr.to),
      el("td", {}, who(tr)),
      el("td", { class: "why" }, tr.evidence),
    ),
  );
  fill("transitions", changes.length ? changes : [el("tr", {}, el("td", { colSpan: 5, class: "muted" }, "none since start"))]);
  const groups = new Map(); // newest first: the first of a group is its latest
  for (const tr of all.filter((t) => t.kind === "alert")) {
    const key = tr.rule + "\u0000" + tr.scope;
    const g = groups.get(key);
    if (g) g.times += 1;
    else groups.set(key, { tr, times: 1 });
  }
  const alerts = [...groups.values()].map(({ tr, times }) =>
    el(
      "tr",
      {},
      el("td", { class: "time" }, tr.at.replace(" UTC", "")),
      el("td", { class: "scope" }, tr.scope),
      el("td", {}, tr.rule),
      el("td", {}, "×" + times),
      el("td", { class: "why" }, tr.evidence),
    ),
  );
  fill("alerts", alerts.length ? alerts : [el("tr", {}, el("td", { colSpan: 5, class: "muted" }, "none among the latest transitions"))]);
}

function render(s) {
  renderHeader(s);
  renderStanding(s);
  renderApprovals(s);
  renderFeeds(s);
  renderNotifiers(s);
  renderTransitions(s);
}

// ---- polling ---------------------------------------------------------------------------
async function poll() {
  try {
    const { status, data } = await api("GET", "/v1/status");
    if (status === 401 || status === 403) {
      signOut(data.error || "signed out");
      return;
    }
    if (status === 200) {
      render(data);
      lastOk = Date.now();
      $("updated").textContent = "updated " + utc(data.now_ns) + " UTC";
    }
  } catch (e) {
    // network error: shown as stale below
  }
  if (Date.now() - lastOk > STALE_MS) {
    const badge = $("readiness");
    badge.textContent = lastOk ? "NO CONNECTION for " + seconds(Date.now() - lastOk) : "NO CONNECTION";
    badge.className = "badge stale";
    $("trading").textContent = "trading state unknown";
    $("trading").className = "badge stale";
  }
  timer = setTimeout(poll, POLL_MS);
}

// ---- actions ---------------------------------------------------------------------------
function toast(text, bad) {
  const t = $("toast");
  t.textContent = text;
  t.className = bad ? "bad" : "good";
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => (t.hidden = true), 8000);
}

function confirmStep({ title, text, go, reason, run, tone }) {
  pendingAction = run;
  $("confirm-title").textContent = title;
  $("confirm-text").textContent = text;
  $("confirm-go").textContent = go;
  $("confirm-go").className = tone || "danger"; // red to halt, green to resume
  $("confirm-reason").value = reason || "";
  $("confirm-reason-label").hidden = reason !== undefined;
  $("confirm-error").textContent = "";
  $("confirm").showModal();
  if (reason === undefined) $("confirm-reason").focus();
}

function outcome(status, data) {
  if (status === 202) return [data.scope + ": resume requested (" + data.request_id + "); a second risk-admin must approve", false];
  if (status !== 200) return ["refused (" + status + "): " + data.error, true];
  if (data.status === "withdrawn") return ["request " + data.request_id + " withdrawn", false];
  if (!data.changed) return [data.scope + ": already " + data.state + "; nothing changed", false];
  const tr = data.transition;
  return [tr.scope + ": " + tr.from + " → " + tr.to + " (" + tr.evidence + ")", false];
}

async function submitConfirm(event) {
  event.preventDefault();
  const reason = $("confirm-reason").value.trim();
  if (!$("confirm-reason-label").hidden && !reason) {
    $("confirm-error").textContent = "A reason is required.";
    return;
  }
  const run = pendingAction;
  pendingAction = null;
  $("confirm").close();
  if (!run) return;
  const { status, data } = await run(reason);
  const [text, bad] = outcome(status, data);
  toast(text, bad);
}

function askHalt(event) {
  event.preventDefault();
  const scope = $("halt-scope").value.trim();
  const action = $("halt-action").value;
  const reason = $("halt-reason").value.trim();
  if (!scope || !reason) {
    toast("Give a scope and a reason.", true);
    return;
  }
  const what = action === "halt" ? "Halt" : "Set reduce-only on";
  confirmStep({
    title: what + " " + scope + "?",
    text: action === "halt"
      ? "No new orders in " + scope + " until a risk-admin resumes it. Reason: " + reason
      : "Only orders that reduce a position in " + scope + " until a risk-admin resumes it. Reason: " + reason,
    go: what + " " + scope,
    reason,
    run: async () => {
      const result = await api("POST", "/v1/halt", { scope, action, reason });
      if (result.status === 200) $("halt-reason").value = "";
      return result;
    },
  });
}

function askResume(scope) {
  const needs = fourEyes(scope);
  confirmStep({
    title: (needs ? "Request resume of " : "Resume ") + scope + "?",
    text: needs
      ? scope + " stays as it is until a second risk-admin approves this request (four-eyes)."
      : "Trading in " + scope + " starts again now. A breach that still stands halts it again at once.",
    go: (needs ? "Request resume of " : "Resume ") + scope,
    tone: "primary",
    run: (reason) => api("POST", "/v1/resume", { scope, reason }),
  });
}

function askApprove(p) {
  confirmStep({
    title: "Approve resume of " + p.scope + "?",
    text: p.requested_by + " asked: \u201c" + p.reason + "\u201d. Approving resumes " + p.scope + " now, recorded under both names.",
    go: "Approve resume of " + p.scope,
    tone: "primary",
    run: (reason) => api("POST", "/v1/approve", { request_id: p.request_id, reason }),
  });
}

function askWithdraw(p) {
  confirmStep({
    title: "Withdraw the resume request for " + p.scope + "?",
    text: p.scope + " stays as it is; the request " + p.request_id + " by " + p.requested_by + " ends.",
    go: "Withdraw request for " + p.scope,
    tone: "plain",
    run: (reason) => api("POST", "/v1/withdraw", { request_id: p.request_id, reason }),
  });
}

// ---- sign in / out ---------------------------------------------------------------------
async function start() {
  const { status, data } = await api("GET", "/v1/whoami");
  if (status !== 200) {
    signOut(data.error || "sign in failed");
    return;
  }
  me = data;
  $("whoami").textContent = me.name + " (" + me.role + (me.break_glass ? ", BREAK-GLASS" : "") + ")";
  $("signout").hidden = false;
  $("signin").hidden = true;
  $("main").hidden = false;
  $("halt-box").hidden = !may("halt");
  clearTimeout(timer);
  poll();
}

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  me = null;
  clearTimeout(timer);
  $("main").hidden = true;
  $("signout").hidden = true;
  $("whoami").textContent = "";
  $("signin").hidden = false;
  $("signin-error").textContent = message || "";
  $("readiness").textContent = "signed out";
  $("readiness").className = "badge stale";
  $("trading").textContent = "";
  $("trading").className = "badge stale";
}

document.addEventListener("DOMContentLoaded", () => {
  $("signin-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("token").value.trim();
    $("token").value = "";
    if (!value) return;
    sessionStorage.setItem(TOKEN_KEY, value);
    start();
  });
  $("signout").addEventListener("click", () => signOut(""));
  $("halt-form").addEventListener("submit", askHalt);
  $("confirm-form").addEventListener("submit", submitConfirm);
  $("confirm-cancel").addEventListener("click", () => {
    pendingAction = null;
    $("confirm").close();
  });
  if (token()) start();
  else signOut("");
});
