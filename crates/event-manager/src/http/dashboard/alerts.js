// @ts-check
/**
 * The error-rate alerts the agent handler raised: the `system.error` events it published
 * with `error_code: "AGENT_ERROR_RATE"` (from `GET /recent`, and as the stream pushes them),
 * each with whether its agent is still over the threshold (the agent view,
 * `GET /views/agent`: `alerting`, `window_error_rate`).
 */

import { call } from "./api.js";
import { clock, el, syncRows } from "./views.js";

/** The agent handler's name, which is also its view's. */
const AGENT = "agent";
/** The alerts kept, newest first. */
const KEEP = 50;

/** @type {Map<string, any>} the alert events, by id */
const alerts = new Map();
/** @type {Map<string, any>} the agent view's agents, by id */
let agents = new Map();
/** @type {"unknown" | "on" | "off"} whether the agent handler runs here */
let handler = "unknown";

/**
 * Whether an event is an error-rate alert of the agent handler.
 * @param {any} event
 * @returns {boolean}
 */
export function isAlert(event) {
  return event?.event_type === "system.error" && event?.payload?.error_code === "AGENT_ERROR_RATE";
}

/**
 * Adds alert events (pushed by the stream, or read) and redraws.
 * @param {any[]} events
 * @param {HTMLElement} root `#alerts`
 */
export function addAlerts(events, root) {
  let added = false;
  for (const e of events) {
    if (isAlert(e) && !alerts.has(String(e.id))) {
      alerts.set(String(e.id), e);
      added = true;
    }
  }
  if (added) render(root);
  return added;
}

/**
 * Reads the agent view and, when `events` is set, the alerts of the last 24 hours (a scan of
 * the `system.error` events: at sign-in, then seldom, since the stream pushes new ones), and
 * redraws.
 * @param {HTMLElement} root `#alerts`
 * @param {boolean} events
 */
export async function refreshAlerts(root, events) {
  const none = { ok: false, status: 0, body: null, message: "" };
  const [views, recent] = await Promise.all([
    call("/views"), events ? call("/recent?event_type=system.error&limit=500&hours=24") : none,
  ]);
  if (views.ok) {
    handler = views.body.includes(AGENT) ? "on" : "off";
    if (handler === "on") {
      const fleet = await call(`/views/${AGENT}`);
      if (fleet.ok) {
        agents = new Map((fleet.body.snapshot?.agents ?? []).map((/** @type {any} */ a) => [a.agent_id, a]));
      }
    }
  }
  if (recent.ok) addAlerts(recent.body, root);
  render(root);
}

/** @param {HTMLElement} root `#alerts` */
function render(root) {
  const newest = [...alerts.values()]
    .sort((x, y) => (Date.parse(y.timestamp) || 0) - (Date.parse(x.timestamp) || 0))
    .slice(0, KEEP);
  for (const [id] of alerts) {
    if (!newest.some((e) => String(e.id) === id)) alerts.delete(id);
  }
  const alerting = newest.filter((e) => agents.get(String(e.payload.agent_id))?.alerting);
  root.dataset.state = handler;
  root.dataset.count = String(newest.length);
  const badge = /** @type {HTMLElement} */ (root.querySelector(".status"));
  if (handler === "off") {
    badge.textContent = "not raised here";
    badge.className = "status degraded";
  } else {
    badge.textContent = alerting.length ? `${new Set(alerting.map((e) => e.payload.agent_id)).size} alerting` : "none now";
    badge.className = `status ${alerting.length ? "unhealthy" : "healthy"}`;
  }
  const note = /** @type {HTMLElement} */ (root.querySelector(".note"));
  note.textContent = handler === "off"
    ? "The agent handler does not run in this process (ENABLE_EVENT_HANDLERS=false): it raises no alerts here."
    : newest.length === 0 ? "No error-rate alert in the last 24 hours." : "";
  note.hidden = note.textContent === "";
  const body = /** @type {HTMLElement} */ (root.querySelector("tbody"));
  const rows = newest.map((e) => {
    const agent = agents.get(String(e.payload.agent_id));
    return { e, known: agent !== undefined, now: agent?.alerting === true, rate: agent?.window_error_rate ?? 0 };
  });
  syncRows(body, rows, (r) => String(r.e.id), ({ e, known, now, rate: current }) => {
    const p = e.payload;
    const rate = Number(p.error_rate);
    return el("tr", { "data-alert-id": String(e.id), "data-agent": String(p.agent_id),
      "data-alerting": String(now), class: now ? "bad" : "" },
      el("td", {}, clock(e.timestamp)),
      el("td", {}, `${p.agent_id}${p.agent_type ? ` (${p.agent_type})` : ""}`),
      el("td", { class: "num" }, Number.isFinite(rate) ? `${Math.round(rate * 100)}%` : "—"),
      el("td", { class: "num" }, `${p.failures} of ${p.outcomes} in ${p.window_seconds} s`),
      el("td", { title: String(p.error_message ?? "") },
        now ? "alerting" : known ? `over (now ${Math.round(current * 100)}%)` : "—"));
  });
}
