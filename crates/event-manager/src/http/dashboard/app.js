// @ts-check
/**
 * The dashboard: asks for a token, then listens to the live stream (`GET /stream`: new events
 * as they are stored, stats and health every second) and polls only the dead letters every
 * second. When the stream cannot be opened or breaks, it polls everything (stats, health,
 * recent events, dead letters) every second and tries the stream again every
 * RECONNECT_MS. `#app`'s `data-live` says which: `stream` or `polling`.
 */

import { call, deadLetterAction, forgetToken, storeToken, storedToken } from "./api.js";
import { Throughput, drawChart, formatRate } from "./charts.js";
import { openStream } from "./live.js";
import { addAlerts, refreshAlerts } from "./alerts.js";
import { loadCatalog, wireCatalog } from "./catalog.js";
import { loadViewNames, refreshView } from "./domain.js";
import { hideChain, showChain } from "./chain.js";
import {
  clock, el, handlerState, renderDeadLetters, renderHandlers, renderHealth, renderTail,
} from "./views.js";

/** Time between the end of one poll and the start of the next. */
const POLL_MS = 1000;
/** Time between a failed or ended stream and the next attempt. */
const RECONNECT_MS = 5000;
/** The most events the tail keeps. */
const TAIL_MAX = 200;
/** Time between two reads of the alerts and the agent view. */
const ALERTS_MS = 5000;
/** Time between two reads of the alert events themselves while the stream pushes new ones. */
const ALERT_EVENTS_MS = 60_000;
/** Time between two reads of the domain view shown. */
const VIEW_MS = 5000;

/** @param {string} id @returns {any} the element (the page's ids are fixed) */
const $ = (id) => /** @type {any} */ (document.getElementById(id));

const throughput = new Throughput();
/** @type {Map<string, any>} the events shown in the tail, by id */
let tailEvents = new Map();
/** @type {any[]} the tail, newest first, before the correlation filter */
let tail = [];
/** @type {AbortController | undefined} the stream open now */
let stream;
/** @type {number | undefined} */
let reconnectTimer;
/** @type {number | undefined} */
let alertsTimer;
/** @type {number | undefined} */
let viewTimer;
/** @type {Map<string, any>} the dead letters shown, by `handler/id` */
let letters = new Map();
/** @type {string[]} handlers the bus knows, for "redrive all" over every handler */
let knownHandlers = [];
/** @type {number | undefined} */
let timer;
let running = false;
/** A poll is under way; `again`: another was asked for meanwhile (after an action). */
let inFlight = false;
let again = false;

function showLogin(/** @type {string} */ error) {
  running = false;
  clearTimeout(timer);
  clearTimeout(reconnectTimer);
  clearTimeout(alertsTimer);
  clearTimeout(viewTimer);
  stream?.abort();
  stream = undefined;
  setLive("polling", "signed out");
  $("app").hidden = true;
  $("logout").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = error;
  $("login-error").hidden = error === "";
  $("token").focus();
}

function showApp() {
  $("login").hidden = true;
  $("app").hidden = false;
  $("logout").hidden = false;
  running = true;
  void loadTypes();
  void connect();
  void poll();
  alertEventsAt = 0;
  void watchAlerts();
  void loadCatalog().then(() => {
    if ($("publish-payload").value === "") $("publish-type").dispatchEvent(new Event("change"));
  });
  void loadViewNames().then(watchView);
}

/** Reads the domain view shown now and every VIEW_MS. */
async function watchView() {
  if (!running) return;
  clearTimeout(viewTimer);
  try {
    await refreshView(showDetails);
  } finally {
    if (running) viewTimer = window.setTimeout(watchView, VIEW_MS);
  }
}

/** When the alert events were last read (0: never since sign-in). */
let alertEventsAt = 0;

/**
 * Reads the agent view now and every ALERTS_MS, and the alert events at sign-in, while
 * polling, and every ALERT_EVENTS_MS (the stream pushes new ones in between).
 */
async function watchAlerts() {
  if (!running) return;
  clearTimeout(alertsTimer);
  const events = !stream || Date.now() - alertEventsAt >= ALERT_EVENTS_MS;
  if (events) alertEventsAt = Date.now();
  try {
    await refreshAlerts($("alerts"), events);
  } finally {
    if (running) alertsTimer = window.setTimeout(watchAlerts, ALERTS_MS);
  }
}

/**
 * Says whether updates come from the stream or from polling.
 * @param {"stream" | "polling"} mode
 * @param {string} why
 */
function setLive(mode, why) {
  $("app").dataset.live = mode;
  const badge = $("live");
  badge.textContent = mode === "stream" ? "live" : "polling";
  badge.className = `pill ${mode === "stream" ? "running" : "stopped"}`;
  badge.title = why;
}

/** Opens the stream; when it ends, polls and tries again after RECONNECT_MS. */
async function connect() {
  if (!running) return;
  clearTimeout(reconnectTimer);
  const mine = new AbortController();
  stream?.abort();
  stream = mine;
  const ended = await openStream(onMessage, mine.signal);
  if (stream !== mine) return; // signed out, or replaced
  stream = undefined;
  setLive("polling", ended.reason);
  if (ended.status === 401) {
    forgetToken();
    return showLogin(`The token is no longer accepted (401): ${ended.reason}`);
  }
  if (!running) return;
  reconnectTimer = window.setTimeout(connect, RECONNECT_MS);
  void poll();
}

/**
 * One message of the stream.
 * @param {string} name
 * @param {any} data
 */
function onMessage(name, data) {
  if (!running) return;
  if (name === "ready") {
    setLive("stream", "the server pushes each update");
    void reloadTail();
  } else if (name === "events") {
    addToTail(data);
    // A new alert shows at once, and whether its agent is alerting soon after.
    if (addAlerts(data, $("alerts"))) void watchAlerts();
  } else if (name === "events_error") {
    // The tail cannot follow the store (replay turned off, the backend unreachable).
    if (data.error) say(`The live tail cannot read the events: ${data.error}`, "error");
    else if ($("message").classList.contains("error")) say("", "info");
  } else if (name === "snapshot") {
    const drawing = performance.now();
    const now = Date.now();
    if (data.health?.consumers) renderHealth($("health"), data.health);
    if (data.stats) showStats(data.stats, data.health, now);
    else if (data.error) say(`The stats could not be read: ${data.error}`, "error");
    $("updated").textContent = `updated ${clock(new Date(now).toISOString())}`;
    measure(0, performance.now() - drawing);
  }
}

/** Fills the tail from GET /recent (at sign-in, once the stream is open, and on a new type filter). */
async function reloadTail() {
  const type = $("filter-type").value;
  const reply = await call(recentPath());
  if (!reply.ok || type !== $("filter-type").value) return;
  // Events pushed while /recent was read stay, whichever came first.
  const read = new Set(reply.body.map((/** @type {any} */ e) => String(e.id)));
  const pushed = tail.filter((e) => (!type || e.event_type === type) && !read.has(String(e.id)));
  const at = (/** @type {any} */ e) => Date.parse(e.timestamp) || 0;
  showTail([...reply.body, ...pushed].sort((x, y) => at(y) - at(x)));
}

/** @returns {string} the /recent call of the tail, with its type filter */
function recentPath() {
  const type = $("filter-type").value;
  return `/recent?limit=${TAIL_MAX}&hours=1${type ? `&event_type=${encodeURIComponent(type)}` : ""}`;
}

/**
 * Events the stream pushed, oldest first: those of the chosen type go on top of the tail.
 * @param {any[]} events
 */
function addToTail(events) {
  const type = $("filter-type").value;
  const known = new Set(tail.map((e) => String(e.id)));
  const fresh = events.filter((e) => (!type || e.event_type === type) && !known.has(String(e.id)));
  if (fresh.length === 0) return;
  // Newest first by the events' own time: one stored late (a publisher's clock behind)
  // goes where its time puts it.
  const at = (/** @type {any} */ e) => Date.parse(e.timestamp) || 0;
  showTail([...fresh.reverse(), ...tail].sort((x, y) => at(y) - at(x)));
}

/**
 * Shows a message above the dashboard (an error, or the result of an action).
 * @param {string} text
 * @param {"info" | "error"} kind
 */
function say(text, kind) {
  const box = $("message");
  box.textContent = text;
  box.className = `wide ${kind}`;
  box.hidden = text === "";
}

/** @param {import("./api.js").Reply} reply @returns {string} */
function refusal(reply) {
  if (reply.status === 403) {
    return `Refused (403): ${reply.message} Redrive and purge need an admin token; sign in with one.`;
  }
  return `The API answered ${reply.status || "nothing"}: ${reply.message}`;
}

async function signIn(/** @type {SubmitEvent} */ event) {
  event.preventDefault();
  const token = String($("token").value).trim();
  if (token === "") return showLogin("Type a token first.");
  const reply = await call("/health", { token });
  // /health answers 503 with a body when the bus is unhealthy: the token was still accepted.
  if (reply.status === 401 || reply.status === 403) {
    return showLogin(`This token was refused (${reply.status}): ${reply.message}`);
  }
  if (reply.status === 0 || reply.status === 429) return showLogin(refusal(reply));
  storeToken(token);
  $("token").value = "";
  showApp();
}

async function loadTypes() {
  const reply = await call("/types");
  if (!reply.ok) return;
  const select = $("filter-type");
  const chosen = select.value;
  select.replaceChildren(el("option", { value: "" }, "all types"),
    ...reply.body.map((/** @type {string} */ t) => el("option", { value: t }, t)));
  select.value = chosen;
}

/** Polls now (or right after the poll under way), then every POLL_MS. */
async function poll() {
  if (!running) return;
  if (inFlight) {
    again = true;
    return;
  }
  inFlight = true;
  clearTimeout(timer);
  try {
    await pollOnce();
  } catch (e) {
    say(`The dashboard failed to show an update: ${e}`, "error");
  } finally {
    inFlight = false;
  }
  if (!running) return;
  if (again) {
    again = false;
    void poll();
  } else {
    timer = window.setTimeout(poll, POLL_MS);
  }
}

async function pollOnce() {
  const asked = performance.now();
  const dlHandler = $("dl-handler").value;
  const lettersPath = `/dead-letters?limit=200${dlHandler ? `&handler=${encodeURIComponent(dlHandler)}` : ""}`;
  if (stream) {
    // The stream brings the rest.
    const dead = await call(lettersPath);
    if (dead.status === 401) return;
    if (dead.ok) showDeadLetters(dead.body.dead_letters);
    return;
  }
  const [stats, health, recent, dead] = await Promise.all([
    call("/stats"), call("/health"), call(recentPath()), call(lettersPath),
  ]);
  if ([stats, health, recent, dead].some((r) => r.status === 401)) {
    forgetToken();
    showLogin(`The token is no longer accepted (401): ${stats.message || health.message}`);
    return;
  }
  const failed = [stats, recent, dead].find((r) => !r.ok);
  if (failed) say(refusal(failed), "error");
  else if ($("message").classList.contains("error")) say("", "info");
  const now = Date.now();
  const answered = performance.now();
  if (health.body?.consumers) renderHealth($("health"), health.body);
  if (stats.ok) showStats(stats.body, health.body, now);
  if (recent.ok) showTail(recent.body);
  if (dead.ok) showDeadLetters(dead.body.dead_letters);
  $("updated").textContent = `updated ${clock(new Date(now).toISOString())}`;
  measure(answered - asked, performance.now() - answered);
}

/**
 * Keeps the cost of the last update on `#app` for whoever measures the page (the browser
 * tests): `data-polls` (updates, polled or pushed), `data-fetch-ms` (the four calls of a
 * poll; 0 for a pushed snapshot, which fetches nothing), `data-render-ms` (the redraw, which
 * blocks the page) and the largest redraw so far, `data-max-render-ms`.
 * @param {number} fetchMs
 * @param {number} renderMs
 */
function measure(fetchMs, renderMs) {
  const app = $("app").dataset;
  app.polls = String(Number(app.polls ?? 0) + 1);
  app.fetchMs = fetchMs.toFixed(1);
  app.renderMs = renderMs.toFixed(1);
  app.maxRenderMs = Math.max(Number(app.maxRenderMs ?? 0), renderMs).toFixed(1);
}

/**
 * @param {any} stats the body of /stats
 * @param {any} health the body of /health, if it came
 * @param {number} now
 */
function showStats(stats, health, now) {
  const total = stats.total_events;
  $("backend").textContent = `${stats.backend} · ${stats.state} · ${total} event${total === 1 ? "" : "s"}`;
  /** @type {Map<string, number>} */
  const counters = new Map();
  for (const [type, count] of Object.entries(stats.events_by_type ?? {})) {
    counters.set(`type:${type}`, Number(count));
  }
  const handlers = Object.entries(stats.handlers ?? {});
  for (const [name, h] of handlers) {
    counters.set(`handler:${name}:processed`, h.processed);
    counters.set(`handler:${name}:failed`, h.failed);
    counters.set(`handler:${name}:dead_lettered`, h.dead_lettered);
  }
  throughput.sample(now, counters);
  // A type the filter does not offer yet (a custom type's first events): offer it.
  const offered = new Set(Array.from($("filter-type").options, (/** @type {HTMLOptionElement} */ o) => o.value));
  if (Object.keys(stats.events_by_type ?? {}).some((t) => !offered.has(t))) void loadTypes();
  drawCharts(Object.keys(stats.events_by_type ?? {}), handlers.map(([n]) => n), now);

  const consumers = new Map((health?.consumers ?? []).map((/** @type {any} */ c) => [c.handler, c]));
  renderHandlers($("handlers").querySelector("tbody"), handlers.map(([name, h]) => ({
    name,
    state: handlerState(h, consumers.get(name), now),
    lag: h.lag,
    pending: h.pending,
    types: h.event_types,
    processed: h.processed,
    failed: h.failed,
    deadLetters: h.dead_letter_depth,
    rate: h.events_per_second,
    last: h.last_event_at,
    members: h.members ?? [],
    generation: h.generation ?? null,
  })));
  const names = handlers.map(([n]) => n);
  if (names.join() !== knownHandlers.join()) {
    knownHandlers = names;
    const select = $("dl-handler");
    const chosen = select.value;
    select.replaceChildren(el("option", { value: "" }, "every handler"),
      ...names.map((n) => el("option", { value: n }, n)));
    select.value = chosen;
  }
}

/**
 * One chart per handler (processed, failed, dead-lettered), then one per event type
 * (published).
 * @param {string[]} types
 * @param {string[]} handlers
 * @param {number} now
 */
function drawCharts(types, handlers, now) {
  const charts = [
    ...handlers.map((h) => ({
      series: `handler:${h}`, title: h,
      lines: [
        { key: `handler:${h}:processed`, label: "processed", className: "processed" },
        { key: `handler:${h}:failed`, label: "failed", className: "failed" },
        { key: `handler:${h}:dead_lettered`, label: "dead", className: "dead" },
      ],
    })),
    ...types.map((t) => ({
      series: `type:${t}`, title: t,
      lines: [{ key: `type:${t}`, label: "published", className: "published" }],
    })),
  ];
  const root = $("charts");
  const wanted = new Set(charts.map((c) => c.series));
  for (const card of Array.from(root.children)) {
    if (!wanted.has(card.getAttribute("data-series"))) card.remove();
  }
  charts.forEach((chart, index) => {
    let card = root.querySelector(`figure[data-series="${CSS.escape(chart.series)}"]`);
    if (!card) {
      const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
      svg.setAttribute("data-series", chart.series);
      svg.setAttribute("role", "img");
      card = el("figure", { "data-series": chart.series },
        el("figcaption", {}, el("span", { class: "title" }, chart.title), el("span", { class: "rate" })),
        svg,
        el("div", { class: "legend" }, ...chart.lines.map((l) => el("span", { class: l.className }, l.label))));
    }
    if (root.children[index] !== card) root.insertBefore(card, root.children[index] ?? null);
    const svg = card.querySelector("svg");
    drawChart(svg, throughput, chart.lines, now);
    svg.setAttribute("aria-label", `${chart.title}: ${svg.dataset.total} ${chart.lines[0].label}`);
    const latest = throughput.rates(chart.lines[0].key, now).at(-1) ?? 0;
    card.querySelector(".rate").textContent =
      `${formatRate(latest)} · ${svg.dataset.total} ${chart.lines[0].label}`;
  });
}

/** @param {any[]} events newest first */
function showTail(events) {
  tail = events.slice(0, TAIL_MAX);
  const wanted = String($("filter-correlation").value).trim();
  const shown = wanted ? tail.filter((e) => String(e.correlation_id ?? "").includes(wanted)) : tail;
  tailEvents = new Map(shown.map((e) => [String(e.id), e]));
  renderTail($("tail").querySelector("tbody"), shown);
}

/** @param {any[]} list */
function showDeadLetters(list) {
  letters = new Map(list.map((l) => [`${l.handler}/${l.id}`, l]));
  renderDeadLetters($("dead-letters").querySelector("tbody"), list);
}

/**
 * @param {string} title
 * @param {unknown} value shown as indented JSON
 */
function showDetails(title, value) {
  hideChain();
  $("details-title").textContent = title;
  $("details-json").textContent = JSON.stringify(value, null, 2);
  if (!$("details").open) $("details").showModal();
}

/**
 * Opens an event with its causation chain.
 * @param {any} event
 */
function openEvent(event) {
  showDetails(`${event.event_type} ${event.id}`, event);
  void showChain(String(event.id), openEvent);
}

/**
 * Asks to confirm a destructive action in the `#confirm` dialog.
 * @param {string} question
 * @returns {Promise<boolean>}
 */
function confirmAction(question) {
  const dialog = $("confirm");
  $("confirm-text").textContent = question;
  return new Promise((resolve) => {
    /** @param {boolean} answer */
    const done = (answer) => {
      $("confirm-yes").onclick = null;
      $("confirm-no").onclick = null;
      dialog.oncancel = null;
      if (dialog.open) dialog.close();
      resolve(answer);
    };
    $("confirm-yes").onclick = () => done(true);
    $("confirm-no").onclick = () => done(false);
    dialog.oncancel = () => done(false);
    dialog.showModal();
  });
}

/**
 * Redrives or purges, after confirmation, and says what happened.
 * @param {"redrive" | "purge"} action
 * @param {string[]} handlers
 * @param {string[] | "all"} ids
 * @param {string} question
 */
async function act(action, handlers, ids, question) {
  if (handlers.length === 0) return say("There are no dead letters to act on.", "info");
  if (!(await confirmAction(question))) return;
  let count = 0;
  for (const handler of handlers) {
    const reply = await deadLetterAction(action, handler, ids);
    if (!reply.ok) return say(refusal(reply), "error");
    count += action === "redrive" ? reply.body.redriven : reply.body.purged;
  }
  say(`${action === "redrive" ? "Redriven" : "Purged"}: ${count} dead letter${count === 1 ? "" : "s"}.`, "info");
  void poll();
}

/** The handlers "redrive all" and "purge all" apply to: the one chosen, or each with letters. */
function selectedHandlers() {
  const chosen = $("dl-handler").value;
  if (chosen) return [chosen];
  return [...new Set([...letters.values()].map((l) => String(l.handler)))];
}

function wire() {
  $("login-form").addEventListener("submit", signIn);
  $("logout").addEventListener("click", () => {
    forgetToken();
    showLogin("");
  });
  $("details-close").addEventListener("click", () => $("details").close());
  wireCatalog({ confirm: confirmAction, details: showDetails });
  $("view-name").addEventListener("change", () => void watchView());
  $("tail").querySelector("tbody").addEventListener("click", (/** @type {MouseEvent} */ e) => {
    const row = /** @type {HTMLElement} */ (e.target).closest("tr[data-event-id]");
    const event = row && tailEvents.get(row.getAttribute("data-event-id") ?? "");
    if (event) openEvent(event);
  });
  $("dead-letters").querySelector("tbody").addEventListener("click", (/** @type {MouseEvent} */ e) => {
    const button = /** @type {HTMLElement} */ (e.target).closest("button");
    const row = button?.closest("tr");
    const letter = row && letters.get(`${row.getAttribute("data-handler")}/${row.getAttribute("data-letter-id")}`);
    if (!button || !letter) return;
    if (button.classList.contains("show")) showDetails(`dead letter ${letter.id} of ${letter.handler}`, letter);
    if (button.classList.contains("redrive")) {
      void act("redrive", [letter.handler], [letter.id],
        `Redrive dead letter ${letter.id} (${letter.event?.event_type ?? "invalid envelope"}) to handler ${letter.handler}?`);
    }
  });
  $("redrive-all").addEventListener("click", () => {
    const handlers = selectedHandlers();
    void act("redrive", handlers, "all", `Redrive every dead letter of ${handlers.join(", ")}?`);
  });
  $("purge-all").addEventListener("click", () => {
    const handlers = selectedHandlers();
    void act("purge", handlers, "all",
      `Delete every dead letter of ${handlers.join(", ")} for good? This cannot be undone.`);
  });
  $("filter-type").addEventListener("change", () => void (stream ? reloadTail() : poll()));
  // Typing fires `input`; clearing the field (its × button, or a script) may fire only
  // `change` or `search`.
  for (const name of ["input", "change", "search"]) {
    $("filter-correlation").addEventListener(name, () => showTail(tail));
  }
  $("dl-handler").addEventListener("change", () => void poll());
}

wire();
if (storedToken()) showApp();
else showLogin("");
