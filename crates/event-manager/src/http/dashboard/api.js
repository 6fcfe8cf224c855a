// @ts-check
/**
 * The JSON API as the dashboard uses it: the bearer token kept in session storage only
 * (gone when the tab closes; never in local storage, a cookie or the URL), and one `call`
 * that answers the status and the parsed body, never throws for an HTTP error.
 */

const TOKEN_KEY = "eventbus.token";
const BASE = "/api/v1/events";

/** @returns {string | null} the token typed in this tab, if any */
export function storedToken() {
  return sessionStorage.getItem(TOKEN_KEY);
}

/** @param {string} token */
export function storeToken(token) {
  sessionStorage.setItem(TOKEN_KEY, token);
}

export function forgetToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

/**
 * @typedef {{ status: number, ok: boolean, body: any, message: string }} Reply
 * `message` is the API's error message (`error.message`), or a description of a network
 * failure (status 0); empty on success.
 */

/**
 * One call to the API with the stored token.
 * @param {string} path under /api/v1/events, with its query
 * @param {{ method?: string, body?: unknown, token?: string }} [options]
 * @returns {Promise<Reply>}
 */
export async function call(path, options = {}) {
  const token = options.token ?? storedToken() ?? "";
  /** @type {Record<string, string>} */
  const headers = { Authorization: `Bearer ${token}`, Accept: "application/json" };
  /** @type {RequestInit} */
  const init = { method: options.method ?? "GET", headers, cache: "no-store" };
  if (options.body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(options.body);
  }
  let response;
  try {
    response = await fetch(BASE + path, init);
  } catch (e) {
    return { status: 0, ok: false, body: null, message: `the server cannot be reached (${e})` };
  }
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  const message = response.ok
    ? ""
    : body?.error?.message ?? `HTTP ${response.status} ${response.statusText}`;
  return { status: response.status, ok: response.ok, body, message };
}

/**
 * Redrives or purges dead letters of one handler: the ids given, or all of them.
 * @param {"redrive" | "purge"} action
 * @param {string} handler
 * @param {string[] | "all"} ids
 * @returns {Promise<Reply>}
 */
export function deadLetterAction(action, handler, ids) {
  const body = ids === "all" ? { handler, all: true } : { handler, ids };
  return call(`/dead-letters/${action}`, { method: "POST", body });
}
