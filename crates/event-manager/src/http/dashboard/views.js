// @ts-check
/**
 * Rendering: health, the handlers table, the live tail and the dead letters, built with DOM
 * calls and `textContent` only (no HTML is ever parsed from data, so an event's payload cannot
 * inject markup). Tables are updated row by row, keyed, so a row that did not change stays
 * the same element (a click on it is never lost to a redraw).
 */

/**
 * An element with attributes and children (strings become text).
 * @param {string} tag
 * @param {Record<string, string | undefined>} [attrs]
 * @param {...(Node | string)} children
 * @returns {HTMLElement}
 */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value !== undefined) node.setAttribute(name, value);
  }
  node.append(...children);
  return node;
}

/** @type {WeakMap<Element, string>} what each keyed row was drawn from */
const drawnFrom = new WeakMap();

/**
 * Makes `body`'s rows those of `items`, in order: a row whose item is unchanged is kept,
 * a changed one replaced, a gone one removed.
 * @template T
 * @param {HTMLElement} body
 * @param {T[]} items
 * @param {(item: T) => string} keyOf
 * @param {(item: T) => HTMLElement} rowOf
 */
export function syncRows(body, items, keyOf, rowOf) {
  /** @type {Map<string, Element>} */
  const existing = new Map();
  for (const row of Array.from(body.children)) {
    const key = row.getAttribute("data-key");
    if (key !== null) existing.set(key, row);
  }
  /** @type {Element[]} */
  const rows = [];
  for (const item of items) {
    const key = keyOf(item);
    const signature = JSON.stringify(item);
    let row = existing.get(key);
    if (!row || drawnFrom.get(row) !== signature) {
      row = rowOf(item);
      row.setAttribute("data-key", key);
      drawnFrom.set(row, signature);
    }
    existing.delete(key);
    rows.push(row);
  }
  for (const gone of existing.values()) gone.remove();
  rows.forEach((row, i) => {
    if (body.children[i] !== row) body.insertBefore(row, body.children[i] ?? null);
  });
  while (body.children.length > rows.length) body.lastElementChild?.remove();
}

/** @param {string | null | undefined} at an RFC 3339 time @returns {string} `12:03:04` */
export function clock(at) {
  if (!at) return "—";
  const d = new Date(at);
  return Number.isNaN(d.getTime()) ? at : d.toLocaleTimeString([], { hour12: false });
}

/**
 * @typedef {{ handler: string, alive: boolean, stalled: boolean, lag: number,
 *   dead_letter_depth: number, loop_failures?: number, last_loop_failure?: string | null,
 *   last_loop_failure_at?: string | null }} ConsumerHealth
 */

/** A consumer loop that failed this recently counts as restarting. */
const RESTART_WINDOW_MS = 60_000;

/**
 * A handler's state: `stalled` (lag and no progress for EVENT_STALL_TIMEOUT_MS),
 * `restarting` (a consumer loop not running, or one that failed within the last minute and
 * was restarted by the bus), `stopped` (registered but not subscribed), else `running`.
 * @param {{ subscribed?: boolean }} report the handler's entry in /stats
 * @param {ConsumerHealth | undefined} consumer its entry in /health
 * @param {number} now
 * @returns {"running" | "stalled" | "restarting" | "stopped"}
 */
export function handlerState(report, consumer, now) {
  if (consumer?.stalled) return "stalled";
  if (consumer && !consumer.alive) return "restarting";
  const failedAt = consumer?.last_loop_failure_at ? Date.parse(consumer.last_loop_failure_at) : 0;
  if (failedAt && now - failedAt < RESTART_WINDOW_MS) return "restarting";
  if (report.subscribed === false) return "stopped";
  return "running";
}

/**
 * Health: the overall status, then one row per component (the backend, the manager, each
 * consumer) with its reason.
 * @param {HTMLElement} root `#health`
 * @param {any} health the body of /health
 */
export function renderHealth(root, health) {
  const status = String(health.status ?? "unknown");
  root.dataset.status = status;
  const problems = /** @type {string[]} */ (health.problems ?? []);
  const rt = health.round_trip_ms == null ? "" : `round trip ${health.round_trip_ms.toFixed(1)} ms`;
  /** @type {{ name: string, ok: boolean, reason: string }[]} */
  const components = [
    { name: `backend (${health.backend})`, ok: status !== "unhealthy", reason: rt || "no round trip measured" },
    { name: "manager", ok: health.state === "running", reason: health.state ?? "unknown" },
  ];
  for (const c of /** @type {ConsumerHealth[]} */ (health.consumers ?? [])) {
    const mine = problems.filter((p) => p.includes(c.handler));
    const ok = c.alive && !c.stalled && mine.length === 0;
    const facts = `lag ${c.lag}, ${c.dead_letter_depth} dead letters`;
    components.push({ name: `consumer ${c.handler}`, ok, reason: mine.length ? mine.join("; ") : facts });
  }
  const body = /** @type {HTMLElement} */ (root.querySelector("tbody"));
  syncRows(body, components, (c) => c.name, (c) =>
    el("tr", { "data-component": c.name, class: c.ok ? "ok" : "bad" },
      el("td", {}, c.name), el("td", {}, c.ok ? "ok" : "problem"), el("td", {}, c.reason)));
  const badge = /** @type {HTMLElement} */ (root.querySelector(".status"));
  badge.textContent = status;
  badge.className = `status ${status}`;
  const list = /** @type {HTMLElement} */ (root.querySelector(".problems"));
  list.replaceChildren(...problems.map((p) => el("li", {}, p)));
}

/**
 * @typedef {{ member_id: string, instance_id?: string | null, client_id: string, host: string,
 *   partitions: Record<string, number[]> }} GroupMember one process of a group (Kafka)
 * @typedef {{ name: string, state: string, lag: number, pending: number, types: string[],
 *   processed: number, failed: number, deadLetters: number, rate: number, last: string,
 *   members: GroupMember[], generation: number | null }} HandlerRow
 */

/**
 * One member of a group: who it is and the partitions it owns (`events.user[0,1]`).
 * @param {GroupMember} m
 * @returns {string}
 */
function memberText(m) {
  const who = `${m.instance_id || m.client_id || m.member_id}@${m.host}`;
  const owned = Object.entries(m.partitions ?? {})
    .map(([topic, parts]) => `${topic}[${parts.join(",")}]`);
  return `${who}: ${owned.length ? owned.join(" ") : "no partitions"}`;
}

/**
 * The group's processes, one line each; `—` when the backend reports none (the memory bus
 * and Redis report no group members).
 * @param {HandlerRow} h
 */
function membersCell(h) {
  if (h.members.length === 0) {
    return el("td", { class: "members", "data-members": "0",
      title: "this backend reports no group members (Kafka does)" }, "—");
  }
  const title = h.generation == null ? "" : `generation ${h.generation}`;
  return el("td", { class: "members", "data-members": String(h.members.length), title },
    ...h.members.map((m) => el("div", { "data-member": m.member_id }, memberText(m))));
}

/**
 * The handlers table; a stalled handler's row is marked (`data-state="stalled"`, red).
 * @param {HTMLElement} body `#handlers tbody`
 * @param {HandlerRow[]} rows
 */
export function renderHandlers(body, rows) {
  syncRows(body, rows, (h) => h.name, (h) =>
    el("tr", { "data-handler": h.name, "data-state": h.state, class: `state-${h.state}` },
      el("td", {}, h.name),
      el("td", {}, el("span", { class: `pill ${h.state}` }, h.state)),
      el("td", { class: "num" }, String(h.lag)),
      el("td", { class: "num" }, String(h.pending)),
      el("td", { title: h.types.join(", ") },
        h.types.length > 3 ? `${h.types.slice(0, 3).join(", ")} and ${h.types.length - 3} more` : h.types.join(", ")),
      el("td", { class: "num" }, String(h.processed)),
      el("td", { class: "num" }, String(h.failed)),
      el("td", { class: "num" }, String(h.deadLetters)),
      el("td", { class: "num" }, h.rate.toFixed(2)),
      el("td", {}, clock(h.last)),
      membersCell(h)));
}

/**
 * The live tail, newest first; each row opens its event as JSON when clicked.
 * @param {HTMLElement} body `#tail tbody`
 * @param {any[]} events
 */
export function renderTail(body, events) {
  syncRows(body, events, (e) => String(e.id), (e) =>
    el("tr", { "data-event-id": String(e.id), "data-event-type": String(e.event_type), tabindex: "0" },
      el("td", {}, clock(e.timestamp)),
      el("td", {}, String(e.event_type)),
      el("td", {}, String(e.source)),
      el("td", { class: "mono" }, String(e.correlation_id ?? "—")),
      el("td", { class: "mono" }, String(e.id))));
}

/**
 * The dead letters, each with its event and provenance and a redrive button.
 * @param {HTMLElement} body `#dead-letters tbody`
 * @param {any[]} letters
 */
export function renderDeadLetters(body, letters) {
  syncRows(body, letters, (l) => `${l.handler}/${l.id}`, (l) =>
    el("tr", { "data-letter-id": String(l.id), "data-handler": String(l.handler) },
      el("td", {}, String(l.handler)),
      el("td", {}, String(l.event?.event_type ?? "(invalid envelope)")),
      el("td", {}, String(l.reason)),
      el("td", { class: "num" }, String(l.attempts)),
      el("td", {}, String(l.last_error)),
      el("td", {}, `${clock(l.first_failed_at)} – ${clock(l.last_failed_at)}`),
      el("td", {},
        el("button", { type: "button", class: "show", "data-letter-id": String(l.id) }, "show"),
        el("button", { type: "button", class: "redrive", "data-letter-id": String(l.id),
          "data-handler": String(l.handler) }, "redrive"))));
}
