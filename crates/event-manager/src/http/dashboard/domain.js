// @ts-check
/**
 * The domain views (`GET /views`, `GET /views/{handler}`): the catalogue of opportunities,
 * the users, the agents, the signal funnel, the system status. A view's snapshot is drawn
 * generically, so a view that gains a field shows it without a change here: its plain values
 * as facts, a list or a map of records as a table (the first MAX_ROWS rows, the first
 * MAX_COLUMNS plain fields), anything deeper as JSON on click.
 */

import { call } from "./api.js";
import { el } from "./views.js";

/** What each domain handler's view is, for its label. */
const LABELS = /** @type {Record<string, string>} */ ({
  opportunity: "catalogue (opportunities)",
  user: "users",
  agent: "agents",
  market_signal: "signal funnel",
  system: "system status",
});
const MAX_ROWS = 50;
const MAX_COLUMNS = 8;
/** What `#view` shows now (the view's name and snapshot), so an unchanged one is not redrawn. */
let drawn = "";

/** @param {unknown} v @returns {boolean} */
const plain = (v) => v === null || ["string", "number", "boolean"].includes(typeof v);

/** @param {unknown} v @returns {string} */
function text(v) {
  if (v === null || v === undefined) return "—";
  if (typeof v === "number") return Number.isInteger(v) ? String(v) : v.toFixed(3);
  return String(v);
}

/**
 * Lists the views in `#view-name` (keeping the choice); answers whether there are any.
 * @returns {Promise<boolean>}
 */
export async function loadViewNames() {
  const reply = await call("/views");
  if (!reply.ok) return false;
  const select = /** @type {HTMLSelectElement} */ (document.getElementById("view-name"));
  const chosen = select.value;
  const names = /** @type {string[]} */ (reply.body);
  select.replaceChildren(...names.map((n) => el("option", { value: n }, LABELS[n] ? `${LABELS[n]} — ${n}` : n)));
  if (names.includes(chosen)) select.value = chosen;
  const section = /** @type {HTMLElement} */ (document.getElementById("views-section"));
  section.dataset.views = String(names.length);
  /** @type {HTMLElement} */ (section.querySelector(".note")).hidden = names.length > 0;
  return names.length > 0;
}

/**
 * Reads the chosen view and draws it in `#view`.
 * @param {(title: string, value: unknown) => void} details opens a value as JSON
 */
export async function refreshView(details) {
  const name = /** @type {HTMLSelectElement} */ (document.getElementById("view-name")).value;
  const root = /** @type {HTMLElement} */ (document.getElementById("view"));
  if (!name) {
    drawn = "";
    return root.replaceChildren();
  }
  const reply = await call(`/views/${encodeURIComponent(name)}`);
  if (!reply.ok) {
    drawn = "";
    root.replaceChildren(el("p", { class: "error" }, `The view could not be read (${reply.status}): ${reply.message}`));
    return;
  }
  const snapshot = reply.body.snapshot;
  // Unchanged, it stays as it is: a row being clicked is never replaced under the pointer.
  const signature = `${name}\n${JSON.stringify(snapshot)}`;
  if (signature === drawn && root.dataset.view === name) return;
  drawn = signature;
  const facts = [];
  const blocks = [];
  for (const [key, value] of Object.entries(snapshot ?? {})) {
    if (plain(value)) facts.push(el("div", { "data-field": key }, el("span", { class: "muted" }, key), el("b", {}, text(value))));
    else blocks.push(block(key, value, details));
  }
  root.dataset.view = name;
  root.replaceChildren(el("div", { class: "facts" }, ...facts), ...blocks);
}

/**
 * One field holding a list, a map or an object.
 * @param {string} key
 * @param {any} value
 * @param {(title: string, value: unknown) => void} details
 * @returns {HTMLElement}
 */
function block(key, value, details) {
  /** @type {[string, any][]} */
  const entries = Array.isArray(value) ? value.map((v, i) => [String(i), v]) : Object.entries(value);
  const title = el("h3", {}, `${key} `, el("span", { class: "muted" }, `(${entries.length})`));
  if (entries.length === 0) return el("div", { "data-field": key }, title, el("p", { class: "muted" }, "none yet"));
  if (entries.every(([, v]) => plain(v))) {
    const rows = entries.slice(0, MAX_ROWS).map(([k, v]) => el("tr", {}, el("td", {}, k), el("td", { class: "num" }, text(v))));
    return el("div", { "data-field": key }, title, el("table", {}, el("tbody", {}, ...rows)));
  }
  const keyed = !Array.isArray(value);
  /** @type {string[]} */
  const columns = [];
  for (const [, v] of entries.slice(0, 20)) {
    for (const [k, x] of Object.entries(v ?? {})) {
      if (plain(x) && !columns.includes(k) && columns.length < MAX_COLUMNS) columns.push(k);
    }
  }
  const head = el("tr", {}, ...(keyed ? [el("th", {}, "key")] : []), ...columns.map((c) => el("th", {}, c)));
  const rows = entries.slice(0, MAX_ROWS).map(([k, v]) => {
    const row = el("tr", { "data-key": k, tabindex: "0", title: "click for the whole record" },
      ...(keyed ? [el("td", {}, k)] : []), ...columns.map((c) => el("td", {}, text(v?.[c]))));
    row.addEventListener("click", () => details(`${key} ${k}`, v));
    return row;
  });
  const more = entries.length > MAX_ROWS ? [el("p", { class: "muted" }, `and ${entries.length - MAX_ROWS} more`)] : [];
  return el("div", { "data-field": key }, title, el("table", {}, el("thead", {}, head), el("tbody", {}, ...rows)), ...more);
}
