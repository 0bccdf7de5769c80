// Talking to the CityAgent API: the operator key, JSON calls, and the alert stream (SSE over fetch).
//
// EventSource cannot send an Authorization header, so the stream is read with fetch() and a
// ReadableStream reader, and parsed here (id / event / data / retry lines, comments are
// heartbeats); it reconnects with Last-Event-ID so no event is lost across a reconnect.

const KEY_STORE = "cityagent.key";
const OPERATOR_STORE = "cityagent.operator";

export class ApiError extends Error {
  constructor(status, detail) {
    super(detail || `HTTP ${status}`);
    this.status = status;
  }
}

/** No answer within the call's time limit (status 0, as for a connection that failed). */
export class ApiTimeout extends ApiError {
  constructor(ms) {
    super(0, `no answer within ${ms / 1000} s`);
    this.timeoutMs = ms;
  }
}

/** A fresh Idempotency-Key (crypto.randomUUID needs a secure context; this does not). */
export function newRequestKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
}

export function getKey() {
  try { return sessionStorage.getItem(KEY_STORE) || ""; } catch { return ""; }
}

export function setKey(key) {
  try { sessionStorage.setItem(KEY_STORE, key); } catch { /* storage blocked: memory only */ }
}

export function clearKey() {
  try { sessionStorage.removeItem(KEY_STORE); } catch { /* storage blocked */ }
}

/**
 * The name of the person at the console (值班员), kept with the key for the session. Commands
 * carry it as X-Operator, so the alert's history says who acted (NAME@KEY_ID), not only which
 * key: a command centre's shift often shares one operator key.
 */
export function getOperator() {
  try { return sessionStorage.getItem(OPERATOR_STORE) || ""; } catch { return ""; }
}

export function setOperator(name) {
  try {
    if (name) sessionStorage.setItem(OPERATOR_STORE, name);
    else sessionStorage.removeItem(OPERATOR_STORE);
  } catch { /* storage blocked */ }
}

let unauthorized = () => {};

/** Called whenever the API answers 401: the key is gone or wrong, ask for it again. */
export function onUnauthorized(fn) {
  unauthorized = fn;
}

function headers(key, extra) {
  return { Authorization: `Bearer ${key}`, ...extra };
}

async function detailOf(res) {
  try {
    const doc = await res.json();
    return typeof doc.detail === "string" ? doc.detail : JSON.stringify(doc.detail);
  } catch {
    return res.statusText;
  }
}

/**
 * A JSON call; ``path`` is relative to the page ("v1/alerts"). Throws ApiError, or ApiTimeout
 * when ``timeoutMs`` passes without a whole answer (the call is aborted: a hung API must not
 * leave a button pending forever). ``requestKey`` is sent as Idempotency-Key, so a retry of a
 * call that timed out after the API took it is not applied twice.
 */
export async function api(path, { method = "GET", body, key, signal, timeoutMs, requestKey } = {}) {
  const controller = timeoutMs ? new AbortController() : null;
  const timer = controller ? setTimeout(() => controller.abort(), timeoutMs) : 0;
  if (controller && signal) signal.addEventListener("abort", () => controller.abort(), { once: true });
  const extra = body === undefined
    ? { Accept: "application/json" }
    : { Accept: "application/json", "Content-Type": "application/json" };
  if (requestKey) extra["Idempotency-Key"] = requestKey;
  const operator = method === "GET" ? "" : getOperator();
  if (operator) extra["X-Operator"] = encodeURIComponent(operator); // HTTP headers are Latin-1
  try {
    const res = await fetch(path, {
      method,
      cache: "no-store",
      signal: controller ? controller.signal : signal,
      headers: headers(key ?? getKey(), extra),
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (!res.ok) {
      const error = new ApiError(res.status, await detailOf(res));
      if (res.status === 401 && key === undefined) unauthorized(error);
      throw error;
    }
    return res.status === 204 ? null : await res.json();
  } catch (error) {
    if (controller?.signal.aborted && !signal?.aborted) throw new ApiTimeout(timeoutMs);
    throw error;
  } finally {
    clearTimeout(timer);
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * The alert stream. ``onEvent(name, data, id)`` gets every event (``data`` parsed as JSON),
 * ``onState("connecting" | "live" | "retry")`` the connection's state, ``onAlive()`` any
 * bytes at all (heartbeats included), ``onOpen(resumed)`` the first bytes of a connection:
 * the server has subscribed by then, so a client that did not resume (no Last-Event-ID)
 * lists the alerts now and misses nothing.
 */
export class EventStream {
  constructor(path, { onEvent, onOpen = () => {}, onState = () => {}, onAlive = () => {}, stallMs = 35000 }) {
    this.path = path;
    this.onEvent = onEvent;
    this.onOpen = onOpen;
    this.onState = onState;
    this.onAlive = onAlive;
    this.stallMs = stallMs;
    this.lastId = null;
    this.retryMs = 3000;
    this.running = false;
    this.controller = null;
  }

  start() {
    if (this.running) return;
    this.running = true;
    this.loop();
  }

  stop() {
    this.running = false;
    this.controller?.abort();
  }

  async loop() {
    let failures = 0;
    while (this.running) {
      this.onState(failures ? "retry" : "connecting");
      const controller = this.controller = new AbortController();
      let stall = 0;
      const watchdog = () => {
        clearTimeout(stall);
        stall = setTimeout(() => controller.abort(), this.stallMs);
      };
      try {
        const extra = { Accept: "text/event-stream" };
        const resumed = Boolean(this.lastId);
        if (resumed) extra["Last-Event-ID"] = this.lastId;
        watchdog();
        const res = await fetch(this.path, {
          headers: headers(getKey(), extra), cache: "no-store", signal: controller.signal,
        });
        if (res.status === 401) {
          this.running = false;
          unauthorized(new ApiError(401, await detailOf(res)));
          break;
        }
        if (res.status === 422 && this.lastId) {
          // An event id this API no longer understands: start afresh, and re-list.
          this.lastId = null;
          this.onEvent("reset", { detail: await detailOf(res) }, null);
          continue;
        }
        if (!res.ok) throw new ApiError(res.status, await detailOf(res));
        failures = 0;
        this.onState("live");
        await this.read(res.body, watchdog, () => this.onOpen(resumed));
      } catch (error) {
        if (!this.running) break;
        if (error.name !== "AbortError") console.warn("alert stream:", error.message);
      } finally {
        clearTimeout(stall);
      }
      if (!this.running) break;
      failures += 1;
      this.onState("retry");
      await sleep(Math.min(this.retryMs * Math.min(failures, 5), 30000));
    }
  }

  async read(body, watchdog, opened) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    let event = "message";
    let data = [];
    let id = this.lastId;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      watchdog();
      if (opened) {
        opened();
        opened = null;
      }
      this.onAlive();
      buffer += value;
      let start = 0;
      for (let end = buffer.indexOf("\n"); end >= 0; end = buffer.indexOf("\n", start)) {
        let line = buffer.slice(start, end);
        start = end + 1;
        if (line.endsWith("\r")) line = line.slice(0, -1);
        if (line === "") {  // end of an event: the id counts even without data
          this.lastId = id;
          if (data.length) this.dispatch(event, data.join("\n"), id);
          event = "message";
          data = [];
          continue;
        }
        if (line.startsWith(":")) continue;  // a comment: heartbeat
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let text = colon < 0 ? "" : line.slice(colon + 1);
        if (text.startsWith(" ")) text = text.slice(1);
        if (field === "data") data.push(text);
        else if (field === "event") event = text || "message";
        else if (field === "id" && !text.includes("\0")) id = text;
        else if (field === "retry" && /^\d+$/.test(text)) this.retryMs = Number(text);
      }
      buffer = buffer.slice(start);
    }
  }

  dispatch(event, text, id) {
    let data;
    try {
      data = JSON.parse(text);
    } catch {
      console.warn(`alert stream: ${event} event whose data is not JSON`);
      return;
    }
    if (event === "overflow" && data.last_event_id) this.lastId = data.last_event_id;
    this.onEvent(event, data, id);
  }
}
