/* LensRoom admin dashboard: a few pages over /api/admin, routed by the
 * URL's hash. No framework and no third-party code; every value from the
 * server reaches the page as text (textContent), never as markup. */
"use strict";

const main = document.getElementById("main");
let session = null; /* GET /api/admin/session: actor, csrfToken */

/* ---- small helpers ---------------------------------------------------- */

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const k of kids.flat()) if (k !== null && k !== undefined)
    e.append(k instanceof Node ? k : document.createTextNode(String(k)));
  return e;
}

function say(msg) { document.getElementById("status").textContent = msg; }

async function api(path, opts) {
  const o = Object.assign({ credentials: "same-origin", headers: {} }, opts || {});
  if (o.body) {
    o.headers["Content-Type"] = "application/json";
    if (session && session.csrfToken) o.headers["X-CSRF-Token"] = session.csrfToken;
    o.body = JSON.stringify(o.body);
  }
  const r = await fetch(path, o);
  let j = null;
  try { j = await r.json(); } catch (e) { j = { error: "HTTP " + r.status }; }
  if (!r.ok) {
    const err = new Error(j.error || ("HTTP " + r.status));
    err.status = r.status; err.body = j;
    throw err;
  }
  return j;
}

function fmtTime(s) { return s ? s.replace("T", " ").replace(/\.\d+Z$/, "Z") : "—"; }
function num(v) { return v === null || v === undefined ? "—" : Number(v).toLocaleString("en-US"); }
function link(href, text) { return el("a", { href, text }); }
function table(id, head, rows, numeric) {
  const nums = new Set(numeric || []);
  return el("div", { class: "table-wrap" },
    el("table", { id },
      el("thead", {}, el("tr", {}, head.map((h, i) =>
        el("th", { scope: "col", class: nums.has(i) ? "num" : null, text: h })))),
      el("tbody", {}, rows)));
}
function cell(v, cls) { return el("td", { class: cls || null }, v instanceof Node ? v : String(v)); }
function showError(e) {
  main.replaceChildren(el("h1", { text: "Something went wrong" }),
    el("p", { class: "error", id: "page-error", text: e.message }));
}
function query(hash) {
  const i = hash.indexOf("?");
  return new URLSearchParams(i < 0 ? "" : hash.slice(i + 1));
}
function preview(url) {
  if (!url) return el("div", { class: "muted", text: "no output" });
  if (/\.(mp4|webm)(\?|$)/.test(url))
    return el("video", { src: url, controls: true, preload: "metadata", muted: true });
  return el("img", { src: url, alt: "output", loading: "lazy" });
}

/* ---- Users ------------------------------------------------------------ */

async function pageUsers(params) {
  const q = params.get("q") || "", cursor = params.get("cursor");
  const input = el("input", { id: "q", name: "q", value: q, placeholder: "user id, its start, or email",
                              autocomplete: "off", spellcheck: "false" });
  const form = el("form", { class: "bar", id: "user-search", role: "search",
    onsubmit: (ev) => { ev.preventDefault(); location.hash = "#/users?q=" + encodeURIComponent(input.value.trim()); } },
    el("label", {}, "Search users", input), el("button", { type: "submit", text: "Search" }));
  main.replaceChildren(el("h1", { text: "Users" }), form, el("p", { class: "muted", text: "Loading…" }));
  const u = new URLSearchParams({ limit: "50" });
  if (q) u.set("q", q);
  if (cursor) u.set("cursor", cursor);
  const j = await api("/api/admin/users?" + u);
  const rows = j.users.map((x) => el("tr", { "data-user": x.userId },
    cell(link("#/user/" + x.userId, x.userId)), cell(num(x.balance), "num"),
    cell(num(x.bought), "num"), cell(num(x.spent), "num"), cell(num(x.refunded), "num"),
    cell(num(x.granted), "num"), cell(fmtTime(x.lastActivity)), cell(x.email || "")));
  const next = j.nextCursor ? link("#/users?" + new URLSearchParams({ q, cursor: j.nextCursor }), "Next page →") : null;
  main.replaceChildren(el("h1", { text: "Users" }), form,
    rows.length ? table("users", ["User", "Balance", "Bought", "Spent", "Refunded", "Granted", "Last activity", "Email"], rows, [1, 2, 3, 4, 5])
                : el("p", { class: "muted", id: "no-users", text: "No user matches." }),
    el("p", {}, next));
  say(rows.length + " users");
}

/* ---- One user --------------------------------------------------------- */

function grantForm(user, onDone) {
  let key = crypto.randomUUID(); /* one per intended change: a double submit grants once */
  const amount = el("input", { id: "amount", name: "amount", type: "number", step: "1", required: true, inputmode: "numeric" });
  const reason = el("input", { id: "reason", name: "reason", required: true, maxlength: "500", size: "30" });
  const result = el("p", { id: "grant-result", role: "status" });
  const button = el("button", { type: "submit", id: "grant-submit", text: "Apply" });
  const form = el("form", { class: "bar", id: "grant", "data-key": key,
    onsubmit: async (ev) => {
      ev.preventDefault();
      button.disabled = true;
      try {
        const j = await api("/api/admin/users/" + user + "/credits", { method: "POST",
          body: { amount: Number(amount.value), reason: reason.value, idempotencyKey: key } });
        result.className = "ok";
        result.textContent = (j.replayed ? "Already applied" : "Applied") + ": balance " + j.balance;
        key = crypto.randomUUID();
        form.setAttribute("data-key", key);
        amount.value = ""; reason.value = "";
        await onDone();
      } catch (e) {
        result.className = "error";
        result.textContent = e.message;
      } finally {
        button.disabled = false;
      }
    } },
    el("label", {}, "Credits (negative takes back)", amount), el("label", {}, "Reason (required)", reason), button);
  return el("section", { "aria-labelledby": "grant-h" }, el("h2", { id: "grant-h", text: "Grant or take back credits" }), form, result);
}

async function pageUser(user) {
  main.replaceChildren(el("h1", { text: "User" }), el("p", { class: "muted", text: "Loading…" }));
  const summary = el("div", { class: "cards", id: "summary" });
  const ledger = el("section", {}), gens = el("section", {});
  async function load() {
    const [u, l, g] = await Promise.all([
      api("/api/admin/users/" + user),
      api("/api/admin/users/" + user + "/ledger?limit=100"),
      api("/api/admin/generations?limit=24&user=" + user)]);
    const x = u.user;
    summary.replaceChildren(...[["Balance", x.balance, "balance"], ["Bought", x.bought, "bought"],
      ["Spent", x.spent, "spent"], ["Refunded", x.refunded, "refunded"], ["Granted", x.granted, "granted"]]
      .map(([k, v, id]) => el("div", { class: "card" }, k, el("b", { id, "data-value": v, text: num(v) }))));
    ledger.replaceChildren(el("h2", { text: "Ledger" }), table("ledger",
      ["When", "Type", "Amount", "Description", "Generation", "Admin"],
      l.transactions.map((t) => el("tr", { "data-id": t.id, "data-type": t.type, "data-amount": t.amount },
        cell(fmtTime(t.createdAt)), cell(t.type), cell(num(t.amount), "num"),
        cell(t.description || "", "wrap"),
        cell(t.generationId ? link("#/generation/" + t.generationId, t.generationId.slice(0, 8)) : ""),
        cell((t.metadata && t.metadata.admin) || ""))), [2]));
    gens.replaceChildren(el("h2", { text: "Generations" }), g.generations.length
      ? el("div", { class: "thumbs", id: "user-generations" }, g.generations.map((x) =>
          el("a", { class: "thumb", href: "#/generation/" + x.id, "data-id": x.id },
            preview(x.url), el("div", {}, x.modelId + " · ", el("span", { class: "status-" + x.status, text: x.status })))))
      : el("p", { class: "muted", text: "No generations." }));
  }
  await load();
  main.replaceChildren(el("h1", {}, "User ", el("code", { text: user })), summary,
    grantForm(user, load), ledger, gens);
  say("user loaded");
}

/* ---- Generations ------------------------------------------------------ */

async function pageGenerations(params) {
  const f = { status: params.get("status") || "", model: params.get("model") || "",
              user: params.get("user") || "", since: params.get("since") || "" };
  const status = el("select", { id: "f-status", name: "status" },
    ["", "pending", "processing", "success", "failed", "canceled"].map((s) =>
      el("option", { value: s, selected: s === f.status, text: s || "any" })));
  const model = el("input", { id: "f-model", name: "model", value: f.model, size: "16" });
  const user = el("input", { id: "f-user", name: "user", value: f.user, size: "20" });
  const since = el("input", { id: "f-since", name: "since", value: f.since, placeholder: "7d, 2026-01-31", size: "12" });
  const form = el("form", { class: "bar", id: "gen-filters", onsubmit: (ev) => {
      ev.preventDefault();
      const u = new URLSearchParams();
      for (const [k, v] of [["status", status.value], ["model", model.value], ["user", user.value], ["since", since.value]])
        if (v.trim()) u.set(k, v.trim());
      location.hash = "#/generations?" + u;
    } },
    el("label", {}, "Status", status), el("label", {}, "Model", model), el("label", {}, "User", user),
    el("label", {}, "Since", since), el("button", { type: "submit", text: "Filter" }));
  main.replaceChildren(el("h1", { text: "Generations" }), form, el("p", { class: "muted", text: "Loading…" }));
  const u = new URLSearchParams({ limit: "50" });
  for (const [k, v] of Object.entries(f)) if (v) u.set(k, v);
  if (params.get("cursor")) u.set("cursor", params.get("cursor"));
  const j = await api("/api/admin/generations?" + u);
  const rows = j.generations.map((g) => el("tr", { "data-id": g.id, "data-status": g.status },
    cell(fmtTime(g.createdAt)), cell(link("#/generation/" + g.id, g.id.slice(0, 8))),
    cell(el("span", { class: "status-" + g.status, text: g.status })), cell(g.modelId),
    cell(link("#/user/" + g.userId, g.userId.slice(0, 8))), cell(num(g.creditsUsed), "num"),
    cell(g.error ? g.error.code : "", "wrap")));
  const nu = new URLSearchParams(u); nu.delete("limit");
  if (j.nextCursor) nu.set("cursor", j.nextCursor);
  main.replaceChildren(el("h1", { text: "Generations" }), form,
    rows.length ? table("generations", ["Created", "Id", "Status", "Model", "User", "Credits", "Error"], rows, [5])
                : el("p", { class: "muted", text: "No generation matches." }),
    el("p", {}, j.nextCursor ? link("#/generations?" + nu, "Next page →") : null));
  say(rows.length + " generations");
}

async function pageGeneration(id) {
  const j = await api("/api/admin/generations/" + id);
  const g = j.generation;
  const refund = g.ledger.filter((t) => t.type === "refund").reduce((a, t) => a + t.amount, 0);
  const facts = [["Status", el("span", { id: "gen-status", class: "status-" + g.status, text: g.status })],
    ["Model", g.modelId], ["User", link("#/user/" + g.userId, g.userId)], ["Created", fmtTime(g.createdAt)],
    ["Finished", fmtTime(g.finishedAt)], ["Duration", g.durationMs === null ? "—" : g.durationMs + " ms"],
    ["Credits used", num(g.creditsUsed)], ["Refunded", el("span", { id: "gen-refund", "data-value": refund, text: num(refund) })],
    ["Prompt", g.prompt || ""]];
  main.replaceChildren(el("h1", {}, "Generation ", el("code", { text: g.id })),
    el("div", { class: "table-wrap" }, el("table", { id: "gen-facts" }, el("tbody", {},
      facts.map(([k, v]) => el("tr", {}, el("th", { scope: "row", text: k }), cell(v, "wrap")))))),
    g.error ? el("section", { id: "gen-error" }, el("h2", { text: "Provider error" }),
      el("p", { class: "error" }, el("code", { id: "gen-error-code", text: g.error.code }), " ", g.error.message || "")) : null,
    el("h2", { text: "Ledger rows" }),
    table("gen-ledger", ["When", "Type", "Amount", "Description"], g.ledger.map((t) =>
      el("tr", { "data-type": t.type, "data-amount": t.amount }, cell(fmtTime(t.createdAt)), cell(t.type),
        cell(num(t.amount), "num"), cell(t.description || "", "wrap"))), [2]),
    el("h2", { text: "Output" }),
    el("div", { class: "thumbs" }, (g.resultUrls && g.resultUrls.length ? g.resultUrls : [null]).map((u) =>
      el("div", { class: "thumb" }, preview(u), u ? el("div", {}, link(u, "open")) : null))));
  say("generation " + g.status);
}

/* ---- Analytics -------------------------------------------------------- */

async function pageAnalytics(params) {
  const since = params.get("since") || "30d";
  const sel = el("select", { id: "range", name: "since" }, [["7d", "7 days"], ["30d", "30 days"], ["90d", "90 days"], ["365d", "a year"]]
    .map(([v, t]) => el("option", { value: v, selected: v === since, text: "Last " + t })));
  const form = el("form", { class: "bar", id: "range-form", onsubmit: (ev) => {
      ev.preventDefault(); location.hash = "#/analytics?since=" + sel.value; } },
    el("label", {}, "Range", sel), el("button", { type: "submit", text: "Show" }));
  main.replaceChildren(el("h1", { text: "Analytics" }), form, el("p", { class: "muted", text: "Loading…" }));
  const q = "since=" + encodeURIComponent(since);
  const a = await api("/api/admin/analytics?" + q);
  const credits = table("credits-table", ["Day", "Spent", "Bought", "Refunded", "Granted"],
    a.creditsPerDay.map((d) => el("tr", { "data-day": d.day }, cell(d.day), cell(num(d.spent), "num"),
      cell(num(d.bought), "num"), cell(num(d.refunded), "num"), cell(num(d.granted), "num"))), [1, 2, 3, 4]);
  const perDay = new Map();
  for (const x of a.generationsPerModelPerDay) perDay.set(x.day, (perDay.get(x.day) || 0) + x.count);
  const gens = table("gens-table", ["Day", "Generations"],
    [...perDay].map(([d, n]) => el("tr", { "data-day": d }, cell(d), cell(num(n), "num"))), [1]);
  const models = table("models-table", ["Model", "Total", "Succeeded", "Failed", "Canceled", "Success", "p50 ms", "p95 ms"],
    a.models.map((m) => el("tr", { "data-model": m.model }, cell(m.model), cell(num(m.total), "num"),
      cell(num(m.succeeded), "num"), cell(num(m.failed), "num"), cell(num(m.canceled), "num"),
      cell(m.successRate === null ? "—" : (m.successRate * 100).toFixed(1) + " %", "num"),
      cell(num(m.p50Ms), "num"), cell(num(m.p95Ms), "num"))), [1, 2, 3, 4, 5, 6, 7]);
  const top = table("top-users", ["User", "Spent", "Generations"], a.topUsers.map((u) =>
    el("tr", {}, cell(link("#/user/" + u.userId, u.userId)), cell(num(u.spent), "num"), cell(num(u.generations), "num"))), [1, 2]);
  const chart = (kind, alt, tbl) => el("div", { class: "chart" },
    el("img", { id: "chart-" + kind, src: "/api/admin/analytics/chart.svg?kind=" + kind + "&" + q, alt, width: "720", height: "280" }), tbl);
  main.replaceChildren(el("h1", { text: "Analytics" }), form,
    el("p", { class: "muted", text: "From " + fmtTime(a.since) + " to " + fmtTime(a.until) + " (UTC days)" }),
    el("h2", { text: "Credits per day" }), chart("credits", "Credits spent, bought, refunded and granted per day", credits),
    el("h2", { text: "Generations per day" }), chart("generations", "Generations per day by model", gens),
    el("h2", { text: "Models" }), models,
    el("h2", {}, "Refunds: ", el("span", { id: "refund-total", text: num(a.refunds && a.refunds.credits) }), " credits"),
    el("h2", { text: "Top users" }), top);
  say("analytics loaded");
}

/* ---- routing ---------------------------------------------------------- */

async function route() {
  const hash = location.hash || "#/users";
  const path = hash.split("?")[0];
  const params = query(hash);
  const section = path.split("/")[1] || "users";
  for (const a of document.querySelectorAll("[data-nav]"))
    a.toggleAttribute("aria-current", a.dataset.nav === section || (section === "user" && a.dataset.nav === "users") ||
                                      (section === "generation" && a.dataset.nav === "generations"));
  for (const a of document.querySelectorAll("[aria-current]")) a.setAttribute("aria-current", "page");
  document.body.dataset.page = section;
  try {
    if (section === "user") await pageUser(path.split("/")[2]);
    else if (section === "generation") await pageGeneration(path.split("/")[2]);
    else if (section === "generations") await pageGenerations(params);
    else if (section === "analytics") await pageAnalytics(params);
    else await pageUsers(params);
    document.body.dataset.ready = hash;
  } catch (e) {
    showError(e);
    document.body.dataset.ready = "error";
  }
}

(async function start() {
  try {
    session = await api("/api/admin/session");
    document.getElementById("who").textContent = "Signed in as " + (session.email || session.actor);
  } catch (e) {
    showError(e);
    return;
  }
  window.addEventListener("hashchange", () => { route(); main.focus({ preventScroll: true }); });
  route();
})();
