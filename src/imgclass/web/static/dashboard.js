// The analytics dashboard. Every chart is fed by one aggregated API call (summary,
// timeseries, cube, concepts), never by raw rows; the events table asks for a bounded
// page. Filters live in the URL fragment, the admin key in sessionStorage.

import { getJson, ApiError, describe } from "./api.js";
import { h, fill, show, fmtCount, fmtMs, fmtPct } from "./dom.js";
import * as charts from "./charts.js";
import { COLORS } from "./charts.js";

const KEY_STORAGE = "imgclass.adminKey";
const API = "/api/v1/analytics";
const EVENTS_LIMIT = 50;
const TOP_CLASSES = 12;
// Above this many buckets a time chart is unreadable and the query needlessly large.
const MAX_BUCKETS = 1500;
const GRAIN_MS = { minute: 60e3, hour: 3600e3, day: 86400e3, week: 7 * 86400e3, month: 30 * 86400e3 };
const GRAINS = Object.keys(GRAIN_MS);
const RANGE_MS = { "24h": 86400e3, "7d": 7 * 86400e3, "30d": 30 * 86400e3, "90d": 90 * 86400e3 };
const DEFAULT_GRAIN = { "24h": "hour", "7d": "hour", "30d": "day", "90d": "day", all: "day", custom: "day" };

const $ = (id) => document.getElementById(id);
const board = $("board");
const login = $("login");
const form = $("filters");
const el = {
  range: $("f-range"),
  from: $("f-from"),
  to: $("f-to"),
  user: $("f-user"),
  klass: $("f-class"),
  grain: $("f-grain"),
};

const state = {
  key: sessionStorage.getItem(KEY_STORAGE),
  range: "30d",
  from: "",
  to: "",
  user: "",
  class: "",
  concept: "",
  grain: "day",
};
let generation = 0;
let inflight = null;

// ---- state <-> URL fragment and form ---------------------------------------

function readHash() {
  const params = new URLSearchParams(location.hash.slice(1));
  for (const name of ["range", "from", "to", "user", "class", "concept", "grain"]) {
    if (params.has(name)) state[name] = params.get(name);
  }
  if (!(state.range in DEFAULT_GRAIN)) state.range = "30d";
  if (!GRAINS.includes(state.grain)) state.grain = DEFAULT_GRAIN[state.range];
}

function writeHash() {
  const params = new URLSearchParams();
  for (const name of ["range", "from", "to", "user", "class", "concept", "grain"]) {
    if (state[name] && !(name === "range" && state.range === "30d")) params.set(name, state[name]);
  }
  if (state.range !== "custom") {
    params.delete("from");
    params.delete("to");
  }
  const hash = params.toString();
  history.replaceState(null, "", hash ? `#${hash}` : location.pathname);
}

function toForm() {
  el.range.value = state.range;
  el.from.value = state.from;
  el.to.value = state.to;
  el.user.value = state.user;
  el.klass.value = state.class;
  el.grain.value = state.grain;
  for (const node of form.querySelectorAll(".custom-range")) show(node, state.range === "custom");
}

function fromForm() {
  state.range = el.range.value;
  state.from = el.from.value;
  state.to = el.to.value;
  state.user = el.user.value.trim();
  state.class = el.klass.value.trim();
  state.grain = el.grain.value;
}

/** ISO datetime (UTC, no zone) of ``ms`` rounded down to the hour or the day. */
function isoFloor(ms, unit) {
  const d = new Date(ms);
  d.setUTCMinutes(0, 0, 0);
  if (unit === "day") d.setUTCHours(0);
  return d.toISOString().slice(0, 19);
}

/** The time window as API parameters, and its length in ms (null: unbounded). */
function window_() {
  if (state.range === "custom") {
    const span = state.from && state.to ? Date.parse(state.to) - Date.parse(state.from) + 86400e3 : null;
    return { from: state.from, to: state.to, span };
  }
  if (state.range === "all") return { from: "", to: "", span: null };
  const span = RANGE_MS[state.range];
  return { from: isoFloor(Date.now() - span, span > 86400e3 ? "day" : "hour"), to: "", span };
}

/** The grain to query: the chosen one unless it would give too many buckets. */
function effectiveGrain(span) {
  let index = GRAINS.indexOf(state.grain);
  // Unbounded: the data could span years, so never finer than a day.
  if (span === null) index = Math.max(index, GRAINS.indexOf("day"));
  else while (index < GRAINS.length - 1 && span / GRAIN_MS[GRAINS[index]] > MAX_BUCKETS) index += 1;
  return GRAINS[index];
}

function filterParams() {
  const { from, to } = window_();
  return { from, to, user: state.user, class: state.class, concept: state.concept };
}

// ---- sign-in -------------------------------------------------------------

function authProblem(err) {
  if (!(err instanceof ApiError)) return null;
  if (err.status === 401) return `That key was not accepted: ${err.message}`;
  if (err.status === 403) return "That key is valid but not an admin key; the dashboard needs one.";
  return null;
}

function showLogin(message = "") {
  show(board, false);
  show($("sign-out"), false);
  show(login);
  const box = $("login-error");
  fill(box, message);
  show(box, Boolean(message));
  $("admin-key").focus();
}

function signOut(message = "") {
  sessionStorage.removeItem(KEY_STORAGE);
  state.key = null;
  showLogin(message);
}

$("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const key = $("admin-key").value.trim();
  if (!key) return;
  const button = event.submitter;
  if (button) button.disabled = true;
  try {
    // The cheapest admin call; it also tells a wrong key from a non-admin one.
    await getJson(`${API}/summary`, { from: isoFloor(Date.now(), "hour") }, key);
    sessionStorage.setItem(KEY_STORAGE, key);
    state.key = key;
    $("admin-key").value = "";
    openBoard();
  } catch (err) {
    const box = $("login-error");
    fill(box, authProblem(err) || `The dashboard could not load: ${describe(err)}`);
    show(box);
    box.dataset.status = err instanceof ApiError ? err.status : "";
  } finally {
    if (button) button.disabled = false;
  }
});

$("sign-out").addEventListener("click", () => signOut());

function openBoard() {
  show(login, false);
  show(board);
  show($("sign-out"));
  toForm();
  refresh();
}

// ---- filters ---------------------------------------------------------------

/** Why the form's filters cannot be applied ("" when they can). */
function formProblem() {
  // Dates as YYYY-MM-DD compare as strings; "To" is inclusive, so equal dates are one day.
  if (el.range.value === "custom" && el.from.value && el.to.value && el.from.value > el.to.value) {
    return "“To” must be the same day as “From” or later.";
  }
  return "";
}

/** Apply the form, unless it is wrong: then say why and send nothing (the board keeps
 * showing what the filters in force select). */
function applyForm() {
  const problem = formProblem();
  const box = $("filters-error");
  fill(box, problem);
  show(box, Boolean(problem));
  el.to.setAttribute("aria-invalid", problem ? "true" : "false");
  if (problem) {
    el.to.focus();
    return;
  }
  fromForm();
  refresh();
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  applyForm();
});
el.range.addEventListener("change", () => {
  for (const node of form.querySelectorAll(".custom-range")) show(node, el.range.value === "custom");
  if (el.range.value === "custom" && !el.from.value) {
    el.to.value = new Date().toISOString().slice(0, 10);
    el.from.value = new Date(Date.now() - 30 * 86400e3).toISOString().slice(0, 10);
  }
  el.grain.value = DEFAULT_GRAIN[el.range.value];
  applyForm();
});
for (const select of [el.grain]) {
  select.addEventListener("change", applyForm);
}
$("reset").addEventListener("click", () => {
  Object.assign(state, { range: "30d", from: "", to: "", user: "", class: "", concept: "", grain: "day" });
  toForm();
  applyForm();
});

function setFilter(name, value) {
  state[name] = value;
  toForm();
  refresh();
}

function renderChips() {
  const chips = [];
  const labels = { user: "User", class: "Class", concept: "Concept" };
  for (const name of ["user", "class", "concept"]) {
    if (!state[name]) continue;
    chips.push(
      h(
        "span",
        { class: "chip", dataset: { filter: name } },
        `${labels[name]}: ${name === "concept" ? conceptName || state.concept : state[name]}`,
        h("button", { type: "button", "aria-label": `Remove the ${name} filter`, onclick: () => setFilter(name, "") }, "×"),
      ),
    );
  }
  fill($("chips"), chips);
}

// ---- loading ---------------------------------------------------------------

function api(path, params, signal) {
  return getJson(`${API}${path}`, params, state.key, signal);
}

async function refresh() {
  const gen = ++generation;
  if (inflight) inflight.abort();
  inflight = new AbortController();
  const { signal } = inflight;
  board.dataset.state = "loading";
  board.setAttribute("aria-busy", "true");
  writeHash();
  renderChips();

  const filters = filterParams();
  const { span } = window_();
  const grain = effectiveGrain(span);
  // Each call feeds its own panels and is drawn as soon as it answers: the cheap ones
  // (served from the daily aggregates) do not wait for the percentiles, which need the facts.
  const measures = "requests,errors";
  const percentiles = "p50_time_ms,p95_time_ms,p99_time_ms";
  const calls = [
    ["summary", ["kpis", "panel-users", "panel-errors", "panel-models"], () => api("/summary", filters, signal), renderSummary],
    ["requests", ["panel-requests"], () => api("/timeseries", { ...filters, grain, measures }, signal), (b) => renderVolume(b, grain, span)],
    ["latency", ["panel-latency"], () => api("/timeseries", { ...filters, grain, measures: percentiles }, signal), (b) => renderLatency(b, grain, span)],
    // One more than shown: failed requests group under the class "none", dropped here.
    ["classes", ["panel-classes"], () => api("/cube", { ...filters, group_by: "class", measures: "requests", order: "-requests", limit: TOP_CLASSES + 1 }, signal), renderClasses],
    ["events", ["panel-events"], () => api("/events", { ...filters, limit: EVENTS_LIMIT }, signal), renderEvents],
    ["concepts", ["panel-concepts"], () => api("/concepts", { ...filters, concept: "", parent: state.concept }, signal), renderConcepts],
  ];
  const failures = [];
  let signedOut = false;
  await Promise.all(
    calls.map(async ([name, panels, call, render]) => {
      for (const id of panels) $(id).setAttribute("aria-busy", "true");
      try {
        const body = await call();
        if (gen !== generation || signedOut) return;
        panelsFailed(panels, "");
        render(body);
        board.dataset.drawn = String(gen); // the latest refresh that has drawn something
      } catch (err) {
        if (gen !== generation || signedOut || (err && err.name === "AbortError")) return;
        const problem = authProblem(err);
        if (problem) {
          signedOut = true;
          signOut(problem);
          return;
        }
        failures.push(`${name}: ${describe(err)}`);
        panelsFailed(panels, describe(err));
        if (!(err instanceof ApiError)) console.error(err);
      } finally {
        if (gen === generation) for (const id of panels) $(id).removeAttribute("aria-busy");
      }
    }),
  );
  if (gen !== generation || signedOut) return; // a newer refresh is under way
  const errorBox = $("board-error");
  fill(errorBox, failures.length ? `Some panels could not load — ${failures.join("; ")}` : "");
  show(errorBox, failures.length > 0);
  board.dataset.state = "ready";
  board.dataset.generation = String(gen);
  board.removeAttribute("aria-busy");
}

// ---- panels ------------------------------------------------------------------

/**
 * Mark panels whose call failed (message) or succeeded (""). A failed panel hides what it
 * showed before, which belongs to other filters, and says why instead: figures left on
 * screen would read as the answer to the filters now in force.
 */
function panelsFailed(ids, message) {
  for (const id of ids) {
    const panel = $(id);
    panel.classList.toggle("is-failed", Boolean(message));
    let note = panel.querySelector(":scope > .panel-error");
    if (!note && message) {
      note = h("p", { class: "panel-error", role: "status" });
      panel.append(note);
    }
    if (note) {
      fill(note, message ? `Could not load: ${message}` : "");
      show(note, Boolean(message));
    }
    if (message && id === "kpis") {
      for (const node of panel.querySelectorAll("[data-kpi]")) node.textContent = "–";
      for (const node of panel.querySelectorAll("[data-kpi-note]")) node.textContent = "";
    }
  }
}

function panelEmpty(panelId, empty) {
  const panel = $(panelId);
  panel.classList.toggle("is-empty", empty);
  show(panel.querySelector(".empty"), empty);
}

/** Warehouse labels are WordNet-style ("curly-coated_retriever"): show them with spaces. */
function pretty(name) {
  if (name === null || name === undefined) return "–";
  return String(name).replaceAll("_", " ");
}

function shortLabel(name) {
  const text = pretty(name);
  return text.length > 28 ? `${text.slice(0, 27)}…` : text;
}

function renderSummary(body) {
  const t = body.totals || {};
  const kpi = (name, text, note = "") => {
    document.querySelector(`[data-kpi="${name}"]`).textContent = text;
    document.querySelector(`[data-kpi-note="${name}"]`).textContent = note;
  };
  const today = body.today || {};
  const yesterday = body.yesterday || {};
  kpi(
    "requests",
    fmtCount(t.requests),
    today.requests !== undefined ? `today ${fmtCount(today.requests)} · yesterday ${fmtCount(yesterday.requests)}` : "",
  );
  kpi("error_rate", fmtPct(t.error_rate), `${fmtCount(t.errors)} failed`);
  kpi("p50_time_ms", fmtMs(t.p50_time_ms), t.avg_time_ms !== undefined ? `mean ${fmtMs(t.avg_time_ms)}` : "");
  kpi("p95_time_ms", fmtMs(t.p95_time_ms), t.p99_time_ms !== undefined ? `p99 ${fmtMs(t.p99_time_ms)}` : "");
  kpi("distinct_users", fmtCount(t.distinct_users));
  kpi("avg_confidence", t.avg_confidence === null || t.avg_confidence === undefined ? "–" : fmtPct(t.avg_confidence), "top-1 score");

  const users = body.top_users || [];
  panelEmpty("panel-users", users.length === 0);
  fill($("users-list"), users.map((u) => h("option", { value: u.user })));
  charts.rankBars(
    $("chart-users"),
    users.map((u) => u.user),
    users.map((u) => u.requests),
    { color: COLORS.teal, onPick: (i) => setFilter("user", users[i].user) },
  );

  const errors = body.errors_by_code || [];
  panelEmpty("panel-errors", errors.length === 0);
  charts.rankBars(
    $("chart-errors"),
    errors.map((e) => e.error_code),
    errors.map((e) => e.requests),
    { color: COLORS.rose, label: "Failed requests" },
  );

  const models = body.models || [];
  panelEmpty("panel-models", models.length === 0);
  charts.doughnut(
    $("chart-models"),
    models.map((m) => `${m.model}${m.fallback ? " (fallback)" : ""}`),
    models.map((m) => m.requests),
  );
}

const STEP_MS = { minute: 60e3, hour: 3600e3, day: 86400e3 };

/** Bucket label as the API writes it: 2026-11-24T22:05, 2026-11-24T22:00, 2026-11-24. */
function bucketKey(ms, grain) {
  const iso = new Date(ms).toISOString();
  if (grain === "minute") return iso.slice(0, 16);
  if (grain === "hour") return `${iso.slice(0, 13)}:00`;
  return iso.slice(0, 10);
}

function bucketStart(key, grain) {
  return Date.parse(grain === "day" ? `${key}T00:00:00Z` : `${key}:00Z`);
}

/**
 * The API returns only buckets that have events; put the empty ones back so that the time
 * axis is linear (minute, hour and day grains, within the window, at most MAX_BUCKETS).
 * Falls back to the rows as they came if any of them does not land on a generated bucket.
 */
function fillGaps(rows, grain, span) {
  const step = STEP_MS[grain];
  if (!step || rows.length === 0) return rows;
  const { from, to } = window_();
  let start = bucketStart(rows[0].time, grain);
  let end = bucketStart(rows[rows.length - 1].time, grain);
  if (span !== null && from) start = Math.min(start, Math.floor(Date.parse(`${from}${from.length === 10 ? "T00:00:00" : ""}Z`) / step) * step);
  if (span !== null) {
    const last = to ? Date.parse(`${to}T00:00:00Z`) + 86400e3 - 1 : Date.now();
    end = Math.max(end, Math.floor(last / step) * step);
  }
  if (!Number.isFinite(start) || !Number.isFinite(end) || (end - start) / step > MAX_BUCKETS) return rows;
  const byKey = new Map(rows.map((r) => [r.time, r]));
  const filled = [];
  let placed = 0;
  for (let t = start; t <= end; t += step) {
    const key = bucketKey(t, grain);
    const row = byKey.get(key);
    if (row) placed += 1;
    filled.push(row || { time: key, requests: 0, errors: 0, p50_time_ms: null, p95_time_ms: null, p99_time_ms: null });
  }
  return placed === rows.length ? filled : rows;
}

function seriesCaption(panelId, rows, grain) {
  const chosen = state.grain === grain ? "" : ` (raised from ${state.grain}: too many points)`;
  $(panelId).querySelector("[data-caption]").textContent = `per ${grain}, UTC${chosen}`;
  panelEmpty(panelId, rows.length === 0);
}

function renderVolume(body, grain, span) {
  const rows = fillGaps(body.rows || [], grain, span);
  seriesCaption("panel-requests", rows, grain);
  charts.timeBars(
    $("chart-requests"),
    rows.map((r) => timeLabel(r.time, grain)),
    [
      { label: "Succeeded", data: rows.map((r) => r.requests - (r.errors || 0)), color: COLORS.accent },
      { label: "Failed", data: rows.map((r) => r.errors || 0), color: COLORS.rose },
    ],
  );
}

function renderLatency(body, grain, span) {
  const rows = fillGaps(body.rows || [], grain, span);
  seriesCaption("panel-latency", rows, grain);
  const round = (v) => (v === null || v === undefined ? null : Math.round(v * 10) / 10);
  charts.timeLines(
    $("chart-latency"),
    rows.map((r) => timeLabel(r.time, grain)),
    [
      { label: "p50", data: rows.map((r) => round(r.p50_time_ms)), color: COLORS.teal },
      { label: "p95", data: rows.map((r) => round(r.p95_time_ms)), color: COLORS.amber },
      { label: "p99", data: rows.map((r) => round(r.p99_time_ms)), color: COLORS.rose },
    ],
    "ms",
  );
}

function timeLabel(value, grain) {
  const text = String(value);
  if (grain === "minute" || grain === "hour") {
    // "2026-11-24T13:05:00" -> "11-24 13:05"
    const match = text.match(/^\d{4}-(\d\d-\d\d)[T ](\d\d:\d\d)/);
    return match ? `${match[1]} ${match[2]}` : text;
  }
  if (grain === "day" || grain === "week") return text.slice(0, 10);
  if (grain === "month") return text.slice(0, 7);
  return text;
}

const NO_CLASS = "none"; // the class of a failed request

function renderClasses(body) {
  const rows = (body.rows || []).filter((r) => r.class !== NO_CLASS).slice(0, TOP_CLASSES);
  panelEmpty("panel-classes", rows.length === 0);
  fill($("classes-list"), rows.map((r) => h("option", { value: r.class })));
  charts.rankBars(
    $("chart-classes"),
    rows.map((r) => shortLabel(r.class)),
    rows.map((r) => r.requests),
    {
      titles: rows.map((r) => pretty(r.class)),
      onPick: (i) => setFilter("class", rows[i].class),
    },
  );
}

let conceptName = "";

function renderConcepts(body) {
  const path = body.path || [];
  const crumbs = [
    h("button", { type: "button", "aria-current": state.concept ? null : "true", onclick: () => setFilter("concept", "") }, "All"),
  ];
  path.forEach((node, i) => {
    const last = i === path.length - 1;
    const name = pretty(typeof node === "string" ? node : node.name);
    const id = typeof node === "string" ? node : node.wnid || node.name;
    crumbs.push(h("span", { class: "sep", "aria-hidden": "true" }, "›"));
    crumbs.push(
      h(
        "button",
        { type: "button", "aria-current": last ? "true" : null, onclick: last ? null : () => setFilter("concept", id) },
        name,
      ),
    );
  });
  fill($("concept-path"), crumbs);
  const tail = path[path.length - 1];
  conceptName = tail ? pretty(typeof tail === "string" ? tail : tail.name) : "";
  renderChips();
  const children = (body.children || []).filter((c) => c.requests > 0);
  const most = Math.max(1, ...children.map((c) => c.requests));
  fill(
    $("concept-children"),
    children.map((c) => {
      const bar = h("div", { class: "fill" });
      bar.style.width = `${((c.requests / most) * 100).toFixed(1)}%`;
      return h(
        "li",
        {},
        h(
          "button",
          { type: "button", title: pretty(c.name), dataset: { wnid: c.wnid, name: c.name }, onclick: () => setFilter("concept", c.wnid) },
          h("span", { class: "name" }, pretty(c.name)),
          h("span", { class: "count" }, fmtCount(c.requests)),
          h("span", { class: "track" }, bar),
        ),
      );
    }),
  );
  panelEmpty("panel-concepts", children.length === 0);
}

function renderEvents(body) {
  const rows = body.rows || [];
  panelEmpty("panel-events", rows.length === 0);
  $("events-caption").textContent = rows.length
    ? `the latest ${rows.length}${rows.length === EVENTS_LIMIT ? "" : " (all that match)"}, newest first`
    : "";
  const tbody = $("events").querySelector("tbody");
  fill(
    tbody,
    rows.map((r) => {
      const failed = r.status >= 400;
      const flags = [r.cache_hit ? "cache" : null, r.fallback ? "fallback" : null].filter(Boolean);
      return h(
        "tr",
        { dataset: { requestId: r.request_id || "" } },
        h("td", { title: r.request_id }, String(r.event_time || "").replace("T", " ").slice(0, 19)),
        h("td", { class: "user" }, r.user),
        h("td", { class: "class", title: r.class }, failed ? "–" : shortLabel(r.class)),
        h("td", { class: "num" }, r.confidence === null || r.confidence === undefined ? "–" : fmtPct(r.confidence)),
        h("td", { class: "num" }, fmtMs(r.time_ms)),
        h("td", { class: failed ? "status-err" : "status-ok" }, String(r.status), failed && r.error_code ? ` ${r.error_code}` : ""),
        h("td", {}, failed ? "–" : r.model, flags.map((f) => h("span", { class: "flag" }, f))),
        h("td", { class: "file", title: r.filename }, r.filename || "–"),
        h("td", {}, r.ip),
      );
    }),
  );
}

// ---- start -------------------------------------------------------------------

if (!charts.available()) show($("charts-missing"));
readHash();
if (state.key) openBoard();
else showLogin();
