// A WebSocket that reconnects by itself, with exponential backoff and jitter.
//
//   import { ReconnectingWebSocket } from "./wsgiws.js";
//   const ws = new ReconnectingWebSocket(() => "ws://127.0.0.1:8000/echo");
//   ws.addEventListener("message", (e) => console.log(e.detail.data));
//   ws.addEventListener("statechange", (e) => console.log(e.detail.state));
//   ws.open();
//
// States: "connecting", "open", "waiting" (detail.delay ms before the next try)
// and "closed" (after close()). Plain ES module, no dependencies, no build step.

export class ReconnectingWebSocket extends EventTarget {
  /**
   * @param {string | (() => string)} url the URL, or a function called before each try
   * @param {{minDelay?: number, maxDelay?: number, factor?: number}} options delays in ms
   */
  constructor(url, { minDelay = 500, maxDelay = 10000, factor = 2 } = {}) {
    super();
    this.url = url;
    this.minDelay = minDelay;
    this.maxDelay = maxDelay;
    this.factor = factor;
    this.state = "closed";
    this.attempts = 0;
    this.socket = null;
    this.timer = null;
    this.retryAt = 0;
    window.addEventListener("online", () => {
      if (this.state === "waiting") this.retryNow();
    });
  }

  /** Connect (again): a no-op while connecting or open. */
  open() {
    if (this.state === "connecting" || this.state === "open") return;
    clearTimeout(this.timer);
    const url = typeof this.url === "function" ? this.url() : this.url;
    const socket = new WebSocket(url);
    this.socket = socket;
    this.setState("connecting");
    socket.addEventListener("open", () => {
      if (socket !== this.socket) return;
      this.attempts = 0;
      this.setState("open");
    });
    socket.addEventListener("message", (event) => {
      if (socket !== this.socket) return;
      this.dispatchEvent(new CustomEvent("message", { detail: { data: event.data } }));
    });
    socket.addEventListener("close", (event) => {
      if (socket !== this.socket) return;
      this.socket = null;
      this.dispatchEvent(
        new CustomEvent("close", { detail: { code: event.code, reason: event.reason } }),
      );
      if (this.state !== "closed") this.schedule();
    });
  }

  /** Close for good (until the next open()). */
  close(code = 1000, reason = "") {
    clearTimeout(this.timer);
    const socket = this.socket;
    this.socket = null;
    this.setState("closed");
    if (socket) socket.close(code, reason);
  }

  /** Close the current connection and connect again at once (e.g. to a new URL). */
  reconnect() {
    this.close();
    this.attempts = 0;
    this.open();
  }

  /** Skip the wait before the next try. */
  retryNow() {
    if (this.state === "waiting") this.open();
  }

  /** Send a string or binary data; returns false when not connected. */
  send(data) {
    if (this.state !== "open" || !this.socket) return false;
    this.socket.send(data);
    return true;
  }

  /** Send a value as JSON text. */
  sendJSON(value) {
    return this.send(JSON.stringify(value));
  }

  schedule() {
    const base = Math.min(this.maxDelay, this.minDelay * this.factor ** this.attempts);
    const delay = Math.round(base * (0.8 + Math.random() * 0.4));
    this.attempts += 1;
    this.retryAt = Date.now() + delay;
    this.setState("waiting", { delay });
    this.timer = setTimeout(() => this.open(), delay);
  }

  setState(state, extra = {}) {
    this.state = state;
    this.dispatchEvent(new CustomEvent("statechange", { detail: { state, ...extra } }));
  }
}
