// @ts-check
/**
 * The live stream (`GET /api/v1/events/stream`, server-sent events) read with `fetch()` and
 * a streaming body reader rather than `EventSource`: `EventSource` cannot send an
 * Authorization header, and the token must never go in a URL (logs, history, Referer).
 */

import { storedToken } from "./api.js";

/** @typedef {{ status: number, reason: string }} Ended why the stream ended (status 0: no answer) */

/**
 * Opens the stream and calls `on(name, data)` for each message (`ready`, `events`,
 * `snapshot`, `end`) with its JSON data; comments (the keep-alive) are skipped. Resolves
 * when the stream ends or cannot be opened; never throws.
 * @param {(name: string, data: any) => void} on
 * @param {AbortSignal} signal aborts the stream (sign-out)
 * @returns {Promise<Ended>}
 */
export async function openStream(on, signal) {
  /** @type {Response} */
  let response;
  try {
    response = await fetch("/api/v1/events/stream", {
      headers: { Authorization: `Bearer ${storedToken() ?? ""}`, Accept: "text/event-stream" },
      cache: "no-store",
      signal,
    });
  } catch (e) {
    return { status: 0, reason: `the stream could not be opened (${e})` };
  }
  if (!response.ok || !response.body) {
    let reason = `HTTP ${response.status}`;
    try {
      reason = (await response.json())?.error?.message ?? reason;
    } catch {
      // Not the API's JSON error: the status says enough.
    }
    return { status: response.status, reason };
  }
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return { status: response.status, reason: "the server ended the stream" };
      buffer += value.replace(/\r\n?/g, "\n");
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        dispatch(block, on);
      }
    }
  } catch (e) {
    return { status: response.status, reason: `the stream broke (${e})` };
  }
}

/**
 * One message: its `event:` name and its `data:` lines joined, parsed as JSON.
 * @param {string} block
 * @param {(name: string, data: any) => void} on
 */
function dispatch(block, on) {
  let name = "message";
  /** @type {string[]} */
  const data = [];
  for (const line of block.split("\n")) {
    if (line === "" || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") name = value;
    else if (field === "data") data.push(value);
  }
  if (data.length === 0) return;
  let parsed;
  try {
    parsed = JSON.parse(data.join("\n"));
  } catch {
    return;
  }
  on(name, parsed);
}
