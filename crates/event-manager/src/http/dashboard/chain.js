// @ts-check
/**
 * The causation chain of an event opened from the tail (`GET /chain/{id}`): its causes up to
 * the root, the event, and the events it caused, indented by depth. Clicking one opens it,
 * with its own chain.
 */

import { call } from "./api.js";
import { clock, el } from "./views.js";

/** How far back the chain is looked for. */
const HOURS = 24;

/** @param {string} id @returns {any} */
const $ = (id) => /** @type {any} */ (document.getElementById(id));

/** Hides the chain (details of something that is not an event of the tail). */
export function hideChain() {
  const root = $("chain");
  root.hidden = true;
  root.dataset.for = "";
}

/**
 * Reads and shows the chain of event `id` in `#chain`.
 * @param {string} id
 * @param {(event: any) => void} open opens an event of the chain
 */
export async function showChain(id, open) {
  const root = $("chain");
  const list = root.querySelector("ol");
  const note = root.querySelector(".note");
  root.hidden = false;
  root.dataset.for = id;
  root.dataset.state = "loading";
  list.replaceChildren();
  note.textContent = "Reading the causation chain…";
  const reply = await call(`/chain/${encodeURIComponent(id)}?hours=${HOURS}`);
  if (root.dataset.for !== id) return; // another event was opened meanwhile
  if (!reply.ok) {
    root.dataset.state = "error";
    note.textContent = reply.status === 404
      ? `This event is not among the events of the last ${HOURS} hours.`
      : `The chain could not be read (${reply.status}): ${reply.message}`;
    return;
  }
  const chain = reply.body;
  const ancestors = /** @type {any[]} */ (chain.ancestors);
  const items = [
    ...ancestors.map((event, i) => ({ event, relation: "ancestor", depth: i - ancestors.length })),
    { event: chain.event, relation: "self", depth: 0 },
    ...chain.descendants.map((/** @type {any} */ l) => ({ event: l.event, relation: "descendant", depth: l.depth })),
  ];
  const top = items[0].depth;
  list.replaceChildren(...items.map(({ event, relation, depth }) => {
    const item = el("li", { "data-event-id": String(event.id), "data-relation": relation,
      "data-depth": String(depth), class: relation, tabindex: "0" },
      el("span", {}, clock(event.timestamp)), " ",
      el("b", {}, String(event.event_type)), ` from ${event.source} `,
      el("span", { class: "mono muted" }, String(event.id)));
    // CSSOM, not a style attribute: the Content-Security-Policy allows no inline style.
    item.style.paddingLeft = `${(depth - top) * 1.2}rem`;
    if (relation !== "self") item.addEventListener("click", () => open(event));
    return item;
  }));
  const parts = [
    `${ancestors.length} cause${ancestors.length === 1 ? "" : "s"} above`,
    `${chain.descendants.length} effect${chain.descendants.length === 1 ? "" : "s"} below`,
    `${chain.scanned} events of the last ${chain.window_hours} h read`,
  ];
  if (chain.missing_ancestor) parts.push(`its oldest cause (${chain.missing_ancestor}) is older than that`);
  if (!chain.complete) parts.push("bounded: not every event was read or shown");
  note.textContent = `${parts.join("; ")}.`;
  root.dataset.state = "ready";
}
