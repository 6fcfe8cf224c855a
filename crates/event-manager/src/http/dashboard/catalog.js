// @ts-check
/**
 * The event catalog (`GET /schema`: each typed event's type, payload, version, partition key,
 * JSON Schema and example; `GET /types` for the custom types the bus holds) and the form
 * that publishes a test event (`POST /publish`, admin token, after a confirmation). The
 * API's answer is shown as it is: the new event's id, or its error (403 for a read token,
 * 400 `invalid_payload` naming the field).
 */

import { call } from "./api.js";
import { el } from "./views.js";

/**
 * @typedef {{ confirm: (question: string) => Promise<boolean>,
 *   details: (title: string, value: unknown) => void }} Dialogs
 */

/** @type {Map<string, any>} the catalog's entries, by type */
let entries = new Map();

/** @param {string} id @returns {any} */
const $ = (id) => /** @type {any} */ (document.getElementById(id));

/** Reads the catalog and the types, and draws them (once per sign-in: they change only with the binary, or as custom types come). */
export async function loadCatalog() {
  const [schema, types] = await Promise.all([call("/schema"), call("/types")]);
  if (schema.ok) {
    entries = new Map(schema.body.map((/** @type {any} */ e) => [String(e.event_type), e]));
    $("catalog").querySelector("tbody").replaceChildren(...schema.body.map((/** @type {any} */ e) =>
      el("tr", { "data-type": String(e.event_type) },
        el("td", { class: "mono" }, String(e.event_type)),
        el("td", {}, String(e.type_name)),
        el("td", { class: "num" }, String(e.schema_version)),
        el("td", {}, String(e.partition_key ?? "—")),
        el("td", {}, String(e.source)),
        el("td", {}, String(e.description ?? "")),
        el("td", {},
          el("button", { type: "button", class: "schema" }, "schema"),
          el("button", { type: "button", class: "example" }, "example"),
          el("button", { type: "button", class: "use" }, "use")))));
  }
  const known = types.ok ? /** @type {string[]} */ (types.body) : [...entries.keys()];
  const custom = known.filter((t) => !entries.has(t));
  $("custom-types").textContent = custom.length
    ? `Custom types the bus holds (no schema): ${custom.join(", ")}`
    : "";
  const select = $("publish-type");
  const chosen = select.value;
  select.replaceChildren(...[...entries.keys(), ...custom].map((t) => el("option", { value: t }, t)));
  if (chosen) select.value = chosen;
}

/**
 * Fills the form with a type and its example payload.
 * @param {string} type
 */
function use(type) {
  $("publish-type").value = type;
  const entry = entries.get(type);
  $("publish-payload").value = JSON.stringify(entry?.example ?? {}, null, 2);
  if (entry?.source) $("publish-source").value = entry.source;
}

/**
 * Shows the form's outcome.
 * @param {string} text
 * @param {"info" | "error"} kind
 * @param {string} [eventId]
 */
function result(text, kind, eventId) {
  const box = $("publish-result");
  box.textContent = text;
  box.className = kind;
  box.hidden = false;
  if (eventId) box.dataset.eventId = eventId;
  else delete box.dataset.eventId;
}

/**
 * Publishes what the form holds, after a confirmation.
 * @param {Dialogs} dialogs
 */
async function publish(dialogs) {
  const type = String($("publish-type").value);
  const source = String($("publish-source").value).trim();
  const correlation = String($("publish-correlation").value).trim();
  let payload;
  try {
    payload = JSON.parse(String($("publish-payload").value));
  } catch (e) {
    return result(`The payload is not JSON: ${e}`, "error");
  }
  if (payload === null || typeof payload !== "object" || Array.isArray(payload)) {
    return result("The payload must be a JSON object.", "error");
  }
  if (!(await dialogs.confirm(`Publish a ${type} event from "${source}" on the live bus? Its handlers will process it.`))) {
    return result("Not published.", "info");
  }
  /** @type {Record<string, unknown>} */
  const body = { event_type: type, payload, source };
  if (correlation) body.correlation_id = correlation;
  const reply = await call("/publish", { method: "POST", body });
  if (reply.ok) {
    result(`Published ${reply.body.event_type} ${reply.body.event_id}.`, "info", String(reply.body.event_id));
  } else if (reply.status === 403) {
    result(`Refused (403): ${reply.message} Publishing needs an admin token; sign in with one.`, "error");
  } else {
    const code = reply.body?.error?.code ? ` ${reply.body.error.code}` : "";
    result(`The API answered ${reply.status || "nothing"}${code}: ${reply.message}`, "error");
  }
}

/**
 * Wires the catalog's buttons and the form.
 * @param {Dialogs} dialogs
 */
export function wireCatalog(dialogs) {
  $("catalog").querySelector("tbody").addEventListener("click", (/** @type {MouseEvent} */ e) => {
    const button = /** @type {HTMLElement} */ (e.target).closest("button");
    const type = button?.closest("tr")?.getAttribute("data-type");
    const entry = type && entries.get(type);
    if (!button || !entry) return;
    if (button.classList.contains("schema")) dialogs.details(`${type}: JSON Schema`, entry.schema);
    if (button.classList.contains("example")) dialogs.details(`${type}: example payload`, entry.example);
    if (button.classList.contains("use")) {
      use(String(type));
      $("publish-form").scrollIntoView({ block: "center" });
    }
  });
  $("publish-type").addEventListener("change", () => use(String($("publish-type").value)));
  $("publish-form").addEventListener("submit", (/** @type {SubmitEvent} */ e) => {
    e.preventDefault();
    void publish(dialogs);
  });
}
