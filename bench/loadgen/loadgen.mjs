// WebSocket load generator for the wsgiws benchmark suite.
//
// Loopback only: the target host must be 127.0.0.1 / localhost / ::1.
// Every loop is bounded both in message count and in wall time.
//
// Usage: node loadgen.mjs --scenario echo|handshake|idle|broadcast|chat
//                         --url ws://127.0.0.1:PORT/echo [options]
//
// Output: one JSON object per line on stdout.
//   {"event":"measure_start"} / {"event":"measure_end"} bracket the measured
//   phase (the orchestrator samples the server's CPU time at those points),
//   {"event":"hold","phase":...} (scenario idle, with --hold 1) asks the
//   orchestrator to sample the server's memory: the generator waits for one
//   line on stdin (at most 60 s) before it goes on,
//   then the last line is {"event":"result", ...}.

import { WebSocket } from "ws";
import { randomFillSync } from "node:crypto";
import { createInterface } from "node:readline";
import { constants as zlibConstants, deflateRawSync } from "node:zlib";
import { cpuUsage, hrtime, argv, exit, stdin, stdout, stderr, nextTick } from "node:process";

const DEFAULTS = {
  scenario: "echo",
  url: "",
  connections: 1,
  size: 64,
  window: 1,
  count: 1000, // echo: messages per connection (measured phase)
  warmup: 100, // echo: warm-up messages per connection (not measured)
  duration: 10, // seconds: hard cap on the measured phase
  "connect-batch": 50, // connections opened concurrently
  "connect-timeout": 10,
  // echo: offer permessage-deflate and send compressed text frames (1 = on)
  deflate: 0,
  // handshake: connections opening and closing at any time
  parallel: 32,
  // idle: wait for the orchestrator at each memory sample (1 = on)
  hold: 0,
  // broadcast
  rounds: 1,
  "bcast-count": 100,
  "bcast-warmup": 5,
  // chat
  groups: 40,
  "chat-count": 50, // messages each client sends (measured phase)
  "chat-warmup": 5,
  rate: 0, // chat: messages/s each client sends; 0 = as fast as its own echo returns
};

function parseArgs(args) {
  const opts = { ...DEFAULTS };
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (!a.startsWith("--")) throw new Error(`unexpected argument ${a}`);
    const key = a.slice(2);
    if (!(key in DEFAULTS)) throw new Error(`unknown option ${a}`);
    const value = args[++i];
    if (value === undefined) throw new Error(`missing value for ${a}`);
    opts[key] = typeof DEFAULTS[key] === "number" ? Number(value) : value;
    if (typeof DEFAULTS[key] === "number" && !Number.isFinite(opts[key])) {
      throw new Error(`bad number for ${a}: ${value}`);
    }
  }
  return opts;
}

function emit(obj) {
  stdout.write(JSON.stringify(obj) + "\n");
}

const nowNs = () => hrtime.bigint();
const nsToS = (ns) => Number(ns) / 1e9;

function checkLoopback(url) {
  const u = new URL(url);
  const host = u.hostname.replace(/^\[|\]$/g, "");
  const ok = host === "localhost" || host === "::1" || /^127\.\d+\.\d+\.\d+$/.test(host);
  if (!ok) throw new Error(`refusing non-loopback target ${url}`);
}

function connectOne(url, timeoutS, deflate = false) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, {
      // Off unless the scenario measures compression: measure framing, not zlib.
      perMessageDeflate: deflate ? { threshold: 0 } : false,
      maxPayload: 64 * 1024 * 1024,
      handshakeTimeout: timeoutS * 1000,
    });
    ws.binaryType = "nodebuffer";
    const onError = (err) => reject(err);
    ws.once("error", onError);
    ws.once("open", () => {
      ws.off("error", onError);
      ws.on("error", (err) => stderr.write(`ws error: ${err.message}\n`));
      if (deflate && !/permessage-deflate/.test(ws.extensions)) {
        ws.terminate();
        reject(new Error("the server did not accept permessage-deflate"));
        return;
      }
      resolve(ws);
    });
  });
}

// Opens n connections, at most `concurrency` handshakes in flight at once,
// and resolves with them in order. `onOpen(ws, i)` (optional) runs as each
// one opens. Rejects on the first failure, or when `deadlineNs` passes; with
// `partial`, resolves instead with the connections open by then (and those
// still opening), and sets `sockets.error` to what stopped it.
function connectAll(
  url,
  n,
  concurrency,
  timeoutS,
  { deflate = false, onOpen, deadlineNs, partial = false } = {},
) {
  return new Promise((resolve, reject) => {
    const sockets = new Array(n);
    let started = 0;
    let opened = 0;
    let settledCount = 0;
    let stopped = null;
    const done = () => {
      const open = sockets.filter((ws) => ws !== undefined);
      open.error = stopped;
      resolve(open);
    };
    const stop = (message) => {
      if (stopped !== null) return;
      stopped = message;
      if (!partial) {
        for (const ws of sockets) if (ws) ws.terminate();
        reject(new Error(message));
      }
    };
    const next = () => {
      if (stopped === null && started < n && deadlineNs !== undefined && nowNs() > deadlineNs) {
        stop(`time cap reached after ${opened} of ${n} connections`);
      }
      if (stopped !== null || started >= n) {
        if (settledCount === started && (partial || stopped === null)) done();
        return;
      }
      const i = started++;
      connectOne(url, timeoutS, deflate).then(
        (ws) => {
          settledCount++;
          sockets[i] = ws;
          opened++;
          if (onOpen) onOpen(ws, i);
          next();
        },
        (err) => {
          settledCount++;
          stop(`connection ${i + 1} of ${n}: ${err.message}`);
          next();
        },
      );
    };
    if (n === 0) return done();
    for (let k = 0; k < Math.min(concurrency, n); k++) next();
  });
}

function closeAll(sockets) {
  return Promise.all(
    sockets.map(
      (ws) =>
        new Promise((resolve) => {
          if (ws.readyState === WebSocket.CLOSED) return resolve();
          const t = setTimeout(() => {
            ws.terminate();
            resolve();
          }, 2000);
          ws.once("close", () => {
            clearTimeout(t);
            resolve();
          });
          ws.close(1000);
        }),
    ),
  );
}

function percentile(sorted, p) {
  if (sorted.length === 0) return null;
  const idx = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[idx];
}

function cpuDelta(before) {
  const d = cpuUsage(before);
  return (d.user + d.system) / 1e6; // seconds
}

// ---------------------------------------------------------------- echo ----

// The client-to-server frame for `payload`, built and masked once (binary,
// FIN, random non-zero masking key). Every echo message is this exact frame,
// so sending costs one socket write and no per-message masking in JS: the
// server still has to unmask every byte.
// With `firstByte` 0xc1 (text, RSV1) the payload is a compressed message.
function prebuiltFrame(payload, firstByte = 0x82) {
  const len = payload.length;
  const extra = len >= 65536 ? 8 : len > 125 ? 2 : 0;
  const frame = Buffer.allocUnsafe(2 + extra + 4 + len);
  frame[0] = firstByte;
  if (extra === 8) {
    frame[1] = 0x80 | 127;
    frame.writeBigUInt64BE(BigInt(len), 2);
  } else if (extra === 2) {
    frame[1] = 0x80 | 126;
    frame.writeUInt16BE(len, 2);
  } else {
    frame[1] = 0x80 | len;
  }
  const mask = frame.subarray(2 + extra, 6 + extra);
  do randomFillSync(mask);
  while ((mask[0] | mask[1] | mask[2] | mask[3]) === 0);
  const off = 6 + extra;
  for (let i = 0; i < len; i++) frame[off + i] = payload[i] ^ mask[i & 3];
  return frame;
}

// permessage-deflate (RFC 7692 section 7.2.1): the message compressed on its
// own (raw deflate, sync flush, the trailing 00 00 ff ff removed). It refers to
// no earlier message, so it is valid whether or not the server keeps its
// inflate context between messages: every message sent can be this one frame.
// `windowBits`: the smallest client_max_window_bits the server asked for.
function deflateMessage(payload, windowBits) {
  const out = deflateRawSync(payload, {
    finishFlush: zlibConstants.Z_SYNC_FLUSH,
    windowBits,
  });
  if (out.length < 4 || out.readUInt32BE(out.length - 4) !== 0x0000ffff) {
    throw new Error("unexpected deflate output");
  }
  return out.subarray(0, out.length - 4);
}

// A JSON text message of `size` bytes, the kind of message compression is for.
function jsonText(size) {
  let text = "";
  for (let i = 0; text.length < size; i++) {
    text += JSON.stringify({ user: `user${i % 7}`, room: "lobby", seq: i, text: "hello there" });
  }
  return Buffer.from(text.slice(0, size), "utf8");
}

// Writes a prebuilt frame straight to the connection's socket; writes made in
// the same tick are corked into one syscall when `cork` (pipelined windows). Falls back to ws.send() if the
// socket is not reachable (ws internals changed).
function makeSender(ws, payload, frame, cork) {
  const sock = ws._socket;
  if (!sock || typeof sock.write !== "function") {
    return () => ws.send(payload, { binary: true });
  }
  if (!cork) return () => sock.write(frame);
  let corked = false;
  const uncork = () => {
    corked = false;
    sock.uncork();
  };
  return () => {
    if (!corked) {
      corked = true;
      sock.cork();
      nextTick(uncork);
    }
    sock.write(frame);
  };
}

// Runs one phase on all sockets: each connection sends `perConn` messages of
// `payload`, keeping up to `window` in flight, and stops sending when the
// deadline passes. Resolves when every sent message has been echoed (or the
// drain grace period after the deadline runs out).
// Reads the server's frames straight off `ws`'s TCP socket, in place of ws's
// parser (which is detached until the returned function is called): server
// frames are not masked, so the generator only walks the headers.
// `onMessage(length, firstByte)` runs for each data frame with FIN set (length
// of the payload on the wire; the first byte has the opcode and RSV1), and
// `onOther(opcode)` for control frames. Returns null when ws internals are not
// reachable or ws has bytes of its own buffered.
function rawFrames(ws, onMessage, onOther) {
  const sock = ws._socket;
  if (!sock || !ws._receiver || ws._receiver._bufferedBytes !== 0) return null;
  const hdr = Buffer.alloc(14);
  let hdrLen = 0;
  let hdrNeed = 2;
  let left = -1; // payload bytes still to skip; -1 while reading a header
  let first = 0;
  let length = 0;
  const frameDone = () => {
    const opcode = first & 0x0f;
    if (opcode >= 8) onOther(opcode);
    else if (first & 0x80) onMessage(length, first);
    left = -1;
    hdrLen = 0;
    hdrNeed = 2;
  };
  const onData = (chunk) => {
    let i = 0;
    while (i < chunk.length) {
      if (left < 0) {
        while (hdrLen < hdrNeed && i < chunk.length) hdr[hdrLen++] = chunk[i++];
        if (hdrLen < hdrNeed) return;
        if (hdrNeed === 2) {
          const len7 = hdr[1] & 0x7f;
          hdrNeed = len7 === 127 ? 10 : len7 === 126 ? 4 : 2;
          if (hdrLen < hdrNeed) continue;
        }
        first = hdr[0];
        const len7 = hdr[1] & 0x7f;
        length = len7 === 127 ? Number(hdr.readBigUInt64BE(2)) : len7 === 126 ? hdr.readUInt16BE(2) : len7;
        left = length;
        if (left === 0) frameDone();
      } else {
        const take = Math.min(left, chunk.length - i);
        i += take;
        left -= take;
        if (left === 0) frameDone();
      }
    }
  };
  const orig = sock.listeners("data");
  for (const l of orig) sock.removeListener("data", l);
  sock.on("data", onData);
  return () => {
    sock.removeListener("data", onData);
    for (const l of orig) sock.on("data", l);
  };
}

// With `raw`, replies are counted by rawFrames (their payload length checked, or
// for `compressed` replies that they have RSV1 set), not parsed by ws.
function echoPhase(sockets, payload, frame, perConn, window, deadlineNs, recordRtt, raw = false, compressed = false) {
  return new Promise((resolve) => {
    const rtts = recordRtt ? [] : null;
    let sentTotal = 0;
    let recvTotal = 0;
    let bytesTotal = 0;
    let errors = 0;
    let doneConns = 0;
    let finished = false;
    let lastRecvNs = nowNs();
    const states = sockets.map((ws) => ({
      sent: 0,
      recv: 0,
      stamps: [],
      done: false,
      write: makeSender(ws, payload, frame, window > 1),
    }));

    const detach = [];
    let rawUsed = raw;
    const finish = (timedOut) => {
      if (finished) return;
      finished = true;
      clearTimeout(drainTimer);
      for (const ws of sockets) ws.removeAllListeners("message");
      for (const d of detach) d();
      resolve({ sentTotal, recvTotal, bytesTotal, errors, rtts, lastRecvNs, timedOut, raw: rawUsed });
    };

    const maybeDone = (st) => {
      const stop = st.sent >= perConn || nowNs() >= deadlineNs;
      if (stop && st.recv >= st.sent && !st.done) {
        st.done = true;
        doneConns++;
        if (doneConns === sockets.length) finish(false);
      }
      return stop;
    };

    const sendOne = (ws, st) => {
      if (rtts) st.stamps.push(nowNs());
      st.sent++;
      sentTotal++;
      st.write();
    };

    const onReply = (ws, st, len, ok) => {
      const t = nowNs();
      st.recv++;
      recvTotal++;
      lastRecvNs = t;
      bytesTotal += len;
      if (!ok) errors++;
      if (rtts) rtts.push(Number(t - st.stamps.shift()) / 1000); // µs
      if (!maybeDone(st)) sendOne(ws, st);
    };
    if (raw) {
      const hooks = sockets.map((ws, i) =>
        rawFrames(
          ws,
          (len, first) =>
            onReply(ws, states[i], compressed ? payload.length : len,
              compressed ? (first & 0x40) !== 0 : len === payload.length),
          () => {}, // a ping (keepalive) goes unanswered for the few seconds measured
        ),
      );
      if (hooks.every((h) => h !== null)) detach.push(...hooks);
      else {
        for (const h of hooks) if (h) h();
        rawUsed = false;
      }
    }

    sockets.forEach((ws, i) => {
      const st = states[i];
      if (!rawUsed) ws.on("message", (data) => onReply(ws, st, data.length, data.length === payload.length));
      const initial = Math.min(window, perConn);
      for (let k = 0; k < initial; k++) sendOne(ws, st);
    });

    // Hard cap: after the deadline, give in-flight messages 5 s to drain.
    const msLeft = Math.max(0, Number(deadlineNs - nowNs()) / 1e6);
    const drainTimer = setTimeout(() => finish(true), msLeft + 5000);
  });
}

async function runEcho(o) {
  const deflate = o.deflate > 0;
  const payload = deflate ? jsonText(o.size) : Buffer.alloc(o.size, 0x61);
  const tConn0 = nowNs();
  const sockets = await connectAll(o.url, o.connections, o["connect-batch"], o["connect-timeout"], {
    deflate,
  });
  let windowBits = 15;
  for (const ws of sockets) {
    const m = /client_max_window_bits=(\d+)/.exec(ws.extensions);
    if (m) windowBits = Math.min(windowBits, Math.max(9, Number(m[1])));
  }
  const frame = deflate
    ? prebuiltFrame(deflateMessage(payload, windowBits), 0xc1)
    : prebuiltFrame(payload);
  const connectS = nsToS(nowNs() - tConn0);

  // Warm-up through ws's parser: every reply is decoded (and inflated) in full
  // and its length checked; the measured phase then counts frames raw.
  let warmupErrors = 0;
  if (o.warmup > 0) {
    const warmDeadline = nowNs() + BigInt(Math.round(Math.min(o.duration, 5) * 1e9));
    const w = await echoPhase(sockets, payload, frame, o.warmup, o.window, warmDeadline, false);
    warmupErrors = w.errors + (w.sentTotal - w.recvTotal);
  }

  emit({ event: "measure_start" });
  const cpu0 = cpuUsage();
  const t0 = nowNs();
  const deadline = t0 + BigInt(Math.round(o.duration * 1e9));
  const r = await echoPhase(
    sockets,
    payload,
    frame,
    o.count,
    o.window,
    deadline,
    o.connections === 1,
    true,
    deflate,
  );
  const wallS = nsToS(r.lastRecvNs - t0);
  const cpuS = cpuDelta(cpu0);
  emit({ event: "measure_end" });
  await closeAll(sockets);

  let lat = null;
  if (r.rtts && r.rtts.length) {
    const s = Float64Array.from(r.rtts).sort();
    const mean = s.reduce((a, b) => a + b, 0) / s.length;
    lat = {
      p50_us: percentile(s, 50),
      p90_us: percentile(s, 90),
      p99_us: percentile(s, 99),
      max_us: s[s.length - 1],
      mean_us: mean,
    };
  }
  return {
    scenario: "echo",
    connections: o.connections,
    size: o.size,
    window: o.window,
    deflate,
    frame_bytes: frame.length,
    receive_mode: r.raw ? "raw-socket" : "ws-parser",
    connect_s: connectS,
    sent: r.sentTotal,
    received: r.recvTotal,
    errors: r.errors + (r.sentTotal - r.recvTotal) + warmupErrors,
    warmup_errors: warmupErrors,
    timed_out: r.timedOut,
    truncated_by_deadline: r.sentTotal < o.count * o.connections,
    wall_s: wallS,
    msgs_per_s: r.recvTotal / wallS,
    mb_per_s: r.bytesTotal / wallS / 1e6,
    latency: lat,
    loadgen_cpu_s: cpuS,
    loadgen_cpu_frac: cpuS / wallS,
  };
}

// ----------------------------------------------------------- handshake ----
//
// `parallel` workers each open a connection (opening handshake), close it
// (close handshake, code 1000) and wait for the TCP connection to close, then
// start again, until `count` cycles are done or the deadline passes.
function handshakePhase(o, count, deadlineNs) {
  return new Promise((resolve) => {
    let started = 0;
    let done = 0;
    let errors = 0;
    let active = 0;
    let finished = false;
    let lastNs = nowNs();
    const times = [];
    const finish = (timedOut) => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      resolve({ done, errors, lastNs, times, timedOut });
    };
    const startOne = () => {
      if (finished) return;
      if (started >= count || nowNs() >= deadlineNs) {
        if (active === 0) finish(false);
        return;
      }
      started++;
      active++;
      const t0 = nowNs();
      let settled = false;
      const ws = new WebSocket(o.url, {
        perMessageDeflate: false,
        handshakeTimeout: o["connect-timeout"] * 1000,
      });
      const end = (ok) => {
        if (settled) return;
        settled = true;
        active--;
        if (ok) {
          done++;
          lastNs = nowNs();
          times.push(Number(lastNs - t0) / 1000);
        } else {
          errors++;
        }
        startOne();
      };
      ws.on("open", () => ws.close(1000));
      ws.on("error", () => {
        ws.terminate();
        end(false);
      });
      // "close": the close handshake is over and the TCP connection closed.
      ws.on("close", (code) => end(code === 1000 || code === 1005));
    };
    for (let k = 0; k < o.parallel; k++) startOne();
    // Hard cap: 5 s after the deadline for the last cycles to finish.
    const msLeft = Math.max(0, Number(deadlineNs - nowNs()) / 1e6);
    const timer = setTimeout(() => finish(true), msLeft + 5000);
  });
}

async function runHandshake(o) {
  if (o.warmup > 0) {
    const warmDeadline = nowNs() + BigInt(Math.round(Math.min(o.duration, 5) * 1e9));
    await handshakePhase(o, o.warmup, warmDeadline);
  }
  emit({ event: "measure_start" });
  const cpu0 = cpuUsage();
  const t0 = nowNs();
  const r = await handshakePhase(o, o.count, t0 + BigInt(Math.round(o.duration * 1e9)));
  const wallS = nsToS(r.lastNs - t0);
  const cpuS = cpuDelta(cpu0);
  emit({ event: "measure_end" });
  const s = Float64Array.from(r.times).sort();
  return {
    scenario: "handshake",
    parallel: o.parallel,
    handshakes: r.done,
    errors: r.errors,
    timed_out: r.timedOut,
    truncated_by_deadline: r.done + r.errors < o.count,
    wall_s: wallS,
    handshakes_per_s: r.done / wallS,
    latency: s.length
      ? { p50_us: percentile(s, 50), p99_us: percentile(s, 99), max_us: s[s.length - 1] }
      : null,
    loadgen_cpu_s: cpuS,
    loadgen_cpu_frac: cpuS / wallS,
  };
}

// ---------------------------------------------------------------- idle ----
//
// Memory per idle connection. A few warm-up connections exchange one message
// and close (the server has then loaded everything a connection needs); first
// memory sample. Then `connections` connections open, each sends one `size`-byte
// message and gets it back (every one is answering); second sample. Then every
// connection exchanges one more message, to show that all of them still answer.
// With --hold 1, each sample is a {"event":"hold"} line, and the generator
// waits for the orchestrator's line on stdin.
let stdinLines = null;
function waitForOrchestrator(phase, extra = {}) {
  emit({ event: "hold", phase, ...extra });
  if (!stdinLines) {
    stdinLines = [];
    const waiters = [];
    const rl = createInterface({ input: stdin });
    rl.on("line", () => (waiters.length ? waiters.shift()() : stdinLines.push(1)));
    stdinLines.waiters = waiters;
  }
  if (stdinLines.length) {
    stdinLines.shift();
    return Promise.resolve(true);
  }
  return new Promise((resolve) => {
    const t = setTimeout(() => resolve(false), 60_000);
    stdinLines.waiters.push(() => {
      clearTimeout(t);
      resolve(true);
    });
  });
}

// Every socket sends one message and waits for the echo; resolves with the
// number answered when all have, or when `timeoutS` runs out.
function roundTripAll(sockets, frame, size, timeoutS) {
  return new Promise((resolve) => {
    let answered = 0;
    let errors = 0;
    let finished = false;
    const finish = () => {
      if (finished) return;
      finished = true;
      clearTimeout(t);
      resolve({ answered, errors });
    };
    const t = setTimeout(finish, timeoutS * 1000);
    if (sockets.length === 0) return finish();
    for (const ws of sockets) {
      ws.once("message", (data) => {
        if (data.length !== size) errors++;
        if (++answered === sockets.length) finish();
      });
      ws._socket.write(frame);
    }
  });
}

async function runIdle(o) {
  const payload = Buffer.alloc(o.size, 0x61);
  const frame = prebuiltFrame(payload);
  const batch = o["connect-batch"];
  const timeoutS = o["connect-timeout"];
  const hold = (phase, extra) => (o.hold > 0 ? waitForOrchestrator(phase, extra) : null);

  const warm = await connectAll(o.url, Math.min(o.warmup, o.connections), batch, timeoutS);
  await roundTripAll(warm, frame, o.size, timeoutS);
  await closeAll(warm);
  await hold("baseline", { connections: 0 });

  const cpu0 = cpuUsage();
  const t0 = nowNs();
  const deadlineNs = t0 + BigInt(Math.round(o.duration * 1e9));
  let answered = 0;
  let errors = 0;
  let allAnswered;
  let opened = -1; // known once connectAll is over
  const target = () => (opened < 0 ? o.connections : opened);
  const answeredPromise = new Promise((resolve) => (allAnswered = resolve));
  const sockets = await connectAll(o.url, o.connections, batch, timeoutS, {
    deadlineNs,
    partial: true,
    onOpen: (ws) => {
      ws.once("message", (data) => {
        if (data.length !== o.size) errors++;
        if (++answered === target()) allAnswered();
      });
      ws._socket.write(frame);
    },
  });
  const connectS = nsToS(nowNs() - t0);
  opened = sockets.length;
  if (answered >= opened) allAnswered();
  // Bounded wait for the last answers.
  const leftMs = Math.max(1000, Number(deadlineNs - nowNs()) / 1e6);
  let capTimer;
  await Promise.race([answeredPromise, new Promise((r) => (capTimer = setTimeout(r, leftMs)))]);
  clearTimeout(capTimer);
  const answeredFirst = answered;
  await hold("loaded", { connections: sockets.length, answered: answeredFirst });
  const again = await roundTripAll(sockets, frame, o.size, Math.min(15, o.duration));
  const cpuS = cpuDelta(cpu0);
  for (const ws of sockets) ws.terminate();
  return {
    scenario: "idle",
    connections: sockets.length,
    connect_error: sockets.error,
    size: o.size,
    connect_s: connectS,
    connects_per_s: sockets.length / connectS,
    answered: answeredFirst,
    answered_again: again.answered,
    errors: errors + again.errors + (sockets.length - answeredFirst) + (sockets.length - again.answered),
    timed_out: answeredFirst < sockets.length,
    loadgen_cpu_s: cpuS,
  };
}

// ----------------------------------------------------------- broadcast ----
//
// Protocol (same for every server under test):
//   client -> "join"                 server adds the connection to group "g",
//                                    replies "joined" to that client only
//   client -> "go <round> <n> <sz>"  server sends n binary messages of sz
//                                    bytes to the whole group; byte 0 of each
//                                    is <round>
async function runBroadcast(o) {
  const tConn0 = nowNs();
  const sockets = await connectAll(o.url, o.connections, o["connect-batch"], o["connect-timeout"]);
  const connectS = nsToS(nowNs() - tConn0);

  // join, wait for every ack
  await new Promise((resolve, reject) => {
    let acks = 0;
    const t = setTimeout(() => reject(new Error("join timed out")), o["connect-timeout"] * 1000);
    for (const ws of sockets) {
      ws.once("message", (data) => {
        if (data.toString() !== "joined") stderr.write(`unexpected join reply ${data}\n`);
        if (++acks === sockets.length) {
          clearTimeout(t);
          resolve();
        }
      });
      ws.send("join");
    }
  });

  // Receiving side. By default each client counts the server's frames
  // straight off its TCP socket (ws's parser detached for the round): every
  // frame of a round has the same length, so the generator checks each
  // frame's first header byte and round id and counts bytes, at a fraction
  // of the per-message cost of the full parser. Falls back to ws "message"
  // events when ws internals are not reachable.
  const hdr = o.size >= 65536 ? 10 : o.size > 125 ? 4 : 2;
  const frameLen = hdr + o.size;
  const rawOk = sockets.every(
    (ws) => ws._socket && ws._receiver && ws._receiver._bufferedBytes === 0,
  );

  const round = (roundId, n, timeoutS) =>
    new Promise((resolve) => {
      const per = sockets.map(() => ({ n: 0, bytes: 0, first: 0n, last: 0n }));
      const detach = [];
      let doneClients = 0;
      let errors = 0;
      let finished = false;
      const target = n * frameLen;
      const finish = (timedOut) => {
        if (finished) return;
        finished = true;
        clearTimeout(timer);
        for (const d of detach) d();
        let deliveries = 0;
        for (const st of per) {
          if (rawOk) st.n = Math.floor(st.bytes / frameLen);
          deliveries += st.n;
        }
        resolve({ per, deliveries, errors, timedOut, t0, raw: rawOk });
      };
      sockets.forEach((ws, i) => {
        const st = per[i];
        if (rawOk) {
          const sock = ws._socket;
          const orig = sock.listeners("data");
          for (const l of orig) sock.removeListener("data", l);
          const onData = (chunk) => {
            const t = nowNs();
            if (st.bytes === 0) st.first = t;
            const into = st.bytes % frameLen;
            for (let k = (frameLen - into) % frameLen; k < chunk.length; k += frameLen) {
              if (chunk[k] !== 0x82) errors++;
            }
            for (let k = (frameLen + hdr - into) % frameLen; k < chunk.length; k += frameLen) {
              if (chunk[k] !== roundId) errors++;
            }
            st.bytes += chunk.length;
            if (st.bytes >= target && st.last === 0n) {
              st.last = t;
              if (st.bytes > target) errors++;
              if (++doneClients === sockets.length) finish(false);
            }
          };
          sock.on("data", onData);
          detach.push(() => {
            sock.removeListener("data", onData);
            for (const l of orig) sock.on("data", l);
          });
        } else {
          ws.on("message", (data) => {
            const t = nowNs();
            if (data.length !== o.size || data[0] !== roundId) errors++;
            if (st.n === 0) st.first = t;
            st.n++;
            if (st.n === n) {
              st.last = t;
              if (++doneClients === sockets.length) finish(false);
            }
          });
          detach.push(() => ws.removeAllListeners("message"));
        }
      });
      const timer = setTimeout(() => finish(true), timeoutS * 1000);
      const t0 = nowNs();
      sockets[0].send(`go ${roundId} ${n} ${o.size}`);
    });

  if (o["bcast-warmup"] > 0) await round(1, o["bcast-warmup"], Math.min(o.duration, 10));

  emit({ event: "measure_start" });
  const cpu0 = cpuUsage();
  const r = await round(2, o["bcast-count"], o.duration);
  const cpuS = cpuDelta(cpu0);
  emit({ event: "measure_end" });
  await closeAll(sockets);

  const expected = o.connections * o["bcast-count"];
  const done = r.per.filter((s) => s.last > 0n);
  const lastNs = done.length ? done.reduce((m, s) => (s.last > m ? s.last : m), 0n) : nowNs();
  const firstNs = r.per.filter((s) => s.first > 0n).reduce((m, s) => (m === 0n || s.first < m ? s.first : m), 0n);
  const completion = Float64Array.from(done.map((s) => Number(s.last - r.t0) / 1000)).sort();
  const wallS = nsToS(lastNs - r.t0);
  return {
    scenario: "broadcast",
    connections: o.connections,
    size: o.size,
    messages: o["bcast-count"],
    connect_s: connectS,
    expected_deliveries: expected,
    deliveries: r.deliveries,
    errors: r.errors + (expected - r.deliveries),
    timed_out: r.timedOut,
    wall_s: wallS,
    deliveries_per_s: r.deliveries / wallS,
    first_delivery_us: firstNs ? Number(firstNs - r.t0) / 1000 : null,
    last_delivery_us: Number(lastNs - r.t0) / 1000,
    client_done_p50_us: percentile(completion, 50),
    receive_mode: r.raw ? "raw-socket" : "ws-parser",
    loadgen_cpu_us_per_delivery: r.deliveries ? (cpuS * 1e6) / r.deliveries : null,
    loadgen_cpu_s: cpuS,
    loadgen_cpu_frac: cpuS / wallS,
  };
}

// ---------------------------------------------------------------- chat ----
//
// Protocol: client -> "join <group>" (text); the server joins the connection to
// that group and answers "joined". Then every binary message a client sends is
// sent by the server to the client's whole group, the sender included. Each
// message is `size` bytes: u32 sender index, u32 sequence number, f64 send time
// (ms, this process's clock), padding. Client i is in group i % groups; with
// several server processes on one port the kernel spreads the clients over them,
// so most groups have members in several processes.
//
// Each client sends `window` messages ahead of its own echo (or at `rate`
// messages/s when rate > 0), `chat-count` in all. Every delivery is checked: each
// receiver must get each sender of its group's messages exactly once and in
// order. Latency = receive time - send time, over every delivery.
async function runChat(o) {
  const n = o.connections;
  const size = Math.max(16, o.size);
  const tConn0 = nowNs();
  const sockets = await connectAll(o.url, n, o["connect-batch"], o["connect-timeout"]);
  const connectS = nsToS(nowNs() - tConn0);
  const groupOf = (i) => i % o.groups;
  const members = Array.from({ length: o.groups }, () => []);
  sockets.forEach((_, i) => members[groupOf(i)].push(i));

  await new Promise((resolve, reject) => {
    let acks = 0;
    const t = setTimeout(() => reject(new Error("join timed out")), o["connect-timeout"] * 1000);
    sockets.forEach((ws, i) => {
      ws.once("message", (data) => {
        if (data.toString() !== "joined") stderr.write(`unexpected join reply ${data}\n`);
        if (++acks === n) {
          clearTimeout(t);
          resolve();
        }
      });
      ws.send(`join room-${groupOf(i)}`);
    });
  });

  // From here on each client parses the server's frames straight off its socket.
  const rawOk = sockets.every((ws) => ws._socket && ws._receiver && ws._receiver._bufferedBytes === 0);
  if (!rawOk) throw new Error("chat needs ws internals (_socket) to read frames raw");
  const handlers = sockets.map(() => null);
  sockets.forEach((ws, i) => {
    const sock = ws._socket;
    for (const l of sock.listeners("data")) sock.removeListener("data", l);
    let carry = null;
    sock.on("data", (chunk) => {
      let buf = carry ? Buffer.concat([carry, chunk]) : chunk;
      let pos = 0;
      const t = performance.now();
      while (buf.length - pos >= 2) {
        const b0 = buf[pos];
        let len = buf[pos + 1] & 0x7f;
        let hdr = 2;
        if (len === 126) {
          if (buf.length - pos < 4) break;
          len = buf.readUInt16BE(pos + 2);
          hdr = 4;
        } else if (len === 127) {
          if (buf.length - pos < 10) break;
          len = Number(buf.readBigUInt64BE(pos + 2));
          hdr = 10;
        }
        if (buf.length - pos < hdr + len) break;
        if (b0 === 0x82 && handlers[i]) handlers[i](buf, pos + hdr, len, t);
        pos += hdr + len;
      }
      carry = pos < buf.length ? Buffer.from(buf.subarray(pos)) : null;
    });
  });

  const phase = (count, timeoutS, record) =>
    new Promise((resolve) => {
      const perReceiver = sockets.map((_, i) => members[groupOf(i)].length * count);
      const lastSeq = sockets.map((_, i) => new Map(members[groupOf(i)].map((s) => [s, -1])));
      const sent = new Int32Array(n);
      const acked = new Int32Array(n);
      const got = new Int32Array(n);
      const lat = record ? new Float64Array(perReceiver.reduce((a, b) => a + b, 0)) : null;
      let nLat = 0;
      let errors = 0;
      let doneClients = 0;
      let finished = false;
      let lastT = 0;
      const timers = [];
      const t0 = performance.now();
      const frames = sockets.map(() => Buffer.alloc(size, 0x61));
      const sendOne = (i) => {
        const f = Buffer.allocUnsafe(size);
        frames[i].copy(f);
        f.writeUInt32BE(i, 0);
        f.writeUInt32BE(sent[i], 4);
        f.writeDoubleBE(performance.now(), 8);
        sent[i]++;
        sockets[i].send(f, { binary: true });
      };
      const finish = (timedOut) => {
        if (finished) return;
        finished = true;
        clearTimeout(timer);
        for (const t of timers) clearInterval(t);
        for (let i = 0; i < n; i++) handlers[i] = null;
        const deliveries = got.reduce((a, b) => a + b, 0);
        const expected = perReceiver.reduce((a, b) => a + b, 0);
        resolve({ deliveries, expected, errors, timedOut, t0, lastT, lat: lat ? lat.subarray(0, nLat) : null, sentTotal: sent.reduce((a, b) => a + b, 0) });
      };
      sockets.forEach((_, i) => {
        handlers[i] = (buf, off, len, t) => {
          if (len !== size) {
            errors++;
            return;
          }
          const sender = buf.readUInt32BE(off);
          const seq = buf.readUInt32BE(off + 4);
          const prev = lastSeq[i].get(sender);
          if (prev === undefined || seq !== prev + 1) errors++;
          lastSeq[i].set(sender, seq);
          if (lat) lat[nLat++] = t - buf.readDoubleBE(off + 8);
          lastT = t;
          if (++got[i] === perReceiver[i] && ++doneClients === n) finish(false);
          if (sender === i && o.rate <= 0) {
            acked[i]++;
            if (sent[i] < count) sendOne(i);
          }
        };
      });
      if (o.rate > 0) {
        const every = 1000 / o.rate;
        sockets.forEach((_, i) => {
          const start = setTimeout(() => {
            const iv = setInterval(() => {
              if (sent[i] < count) sendOne(i);
              else clearInterval(iv);
            }, every);
            timers.push(iv);
          }, Math.random() * every);
          timers.push(start);
        });
      } else {
        for (let i = 0; i < n; i++) for (let k = 0; k < Math.min(o.window, count); k++) sendOne(i);
      }
      const timer = setTimeout(() => finish(true), timeoutS * 1000);
    });

  if (o["chat-warmup"] > 0) await phase(o["chat-warmup"], Math.min(o.duration, 20), false);
  emit({ event: "measure_start" });
  const cpu0 = cpuUsage();
  const r = await phase(o["chat-count"], o.duration, true);
  const cpuS = cpuDelta(cpu0);
  emit({ event: "measure_end" });
  await closeAll(sockets);

  const wallS = (r.lastT - r.t0) / 1000;
  const s = r.lat ? Float64Array.from(r.lat).sort() : new Float64Array();
  return {
    scenario: "chat",
    connections: n,
    groups: o.groups,
    size,
    messages_per_client: o["chat-count"],
    window: o.window,
    rate_per_client: o.rate,
    connect_s: connectS,
    sent: r.sentTotal,
    expected_deliveries: r.expected,
    deliveries: r.deliveries,
    errors: r.errors + (r.expected - r.deliveries),
    timed_out: r.timedOut,
    wall_s: wallS,
    messages_per_s: r.sentTotal / wallS,
    deliveries_per_s: r.deliveries / wallS,
    latency_ms: {
      p50: percentile(s, 50),
      p90: percentile(s, 90),
      p99: percentile(s, 99),
      max: s.length ? s[s.length - 1] : null,
    },
    loadgen_cpu_s: cpuS,
    loadgen_cpu_frac: cpuS / wallS,
  };
}

// ---------------------------------------------------------------- main ----

async function main() {
  const o = parseArgs(argv.slice(2));
  if (!o.url) throw new Error("--url is required");
  checkLoopback(o.url);
  // Global hard stop, whatever happens.
  const hardStop = setTimeout(() => {
    stderr.write("loadgen: global time limit reached\n");
    exit(3);
  }, (o.duration * 3 + o["connect-timeout"] + 30) * 1000);
  hardStop.unref();

  let result;
  if (o.scenario === "echo") result = await runEcho(o);
  else if (o.scenario === "handshake") result = await runHandshake(o);
  else if (o.scenario === "idle") result = await runIdle(o);
  else if (o.scenario === "broadcast") result = await runBroadcast(o);
  else if (o.scenario === "chat") result = await runChat(o);
  else throw new Error(`unknown scenario ${o.scenario}`);
  emit({ event: "result", node: process.version, ...result });
}

main().then(
  () => exit(0),
  (err) => {
    stderr.write(`loadgen: ${err && err.stack ? err.stack : err}\n`);
    exit(2);
  },
);
