// WebSocket load generator for the wsgiws benchmark suite.
//
// Loopback only: the target host must be 127.0.0.1 / localhost / ::1.
// Every loop is bounded both in message count and in wall time.
//
// Usage: node loadgen.mjs --scenario echo|broadcast|chat --url ws://127.0.0.1:PORT/echo [options]
//
// Output: one JSON object per line on stdout.
//   {"event":"measure_start"} / {"event":"measure_end"} bracket the measured
//   phase (the orchestrator samples the server's CPU time at those points),
//   then the last line is {"event":"result", ...}.

import { WebSocket } from "ws";
import { randomFillSync } from "node:crypto";
import { cpuUsage, hrtime, argv, exit, stdout, stderr, nextTick } from "node:process";

const DEFAULTS = {
  scenario: "echo",
  url: "",
  connections: 1,
  size: 64,
  window: 1,
  count: 1000, // echo: messages per connection (measured phase)
  warmup: 100, // echo: warm-up messages per connection (not measured)
  duration: 10, // seconds: hard cap on the measured phase
  "connect-batch": 50,
  "connect-timeout": 10,
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

function connectOne(url, timeoutS) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, {
      perMessageDeflate: false, // measure framing, not zlib
      maxPayload: 64 * 1024 * 1024,
      handshakeTimeout: timeoutS * 1000,
    });
    ws.binaryType = "nodebuffer";
    const onError = (err) => reject(err);
    ws.once("error", onError);
    ws.once("open", () => {
      ws.off("error", onError);
      ws.on("error", (err) => stderr.write(`ws error: ${err.message}\n`));
      resolve(ws);
    });
  });
}

async function connectAll(url, n, batch, timeoutS) {
  const sockets = [];
  for (let i = 0; i < n; i += batch) {
    const k = Math.min(batch, n - i);
    const part = await Promise.all(
      Array.from({ length: k }, () => connectOne(url, timeoutS)),
    );
    sockets.push(...part);
  }
  return sockets;
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
function prebuiltFrame(payload) {
  const len = payload.length;
  const extra = len >= 65536 ? 8 : len > 125 ? 2 : 0;
  const frame = Buffer.allocUnsafe(2 + extra + 4 + len);
  frame[0] = 0x82;
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
function echoPhase(sockets, payload, frame, perConn, window, deadlineNs, recordRtt) {
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

    const finish = (timedOut) => {
      if (finished) return;
      finished = true;
      clearTimeout(drainTimer);
      for (const ws of sockets) ws.removeAllListeners("message");
      resolve({ sentTotal, recvTotal, bytesTotal, errors, rtts, lastRecvNs, timedOut });
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

    sockets.forEach((ws, i) => {
      const st = states[i];
      ws.on("message", (data) => {
        const t = nowNs();
        st.recv++;
        recvTotal++;
        lastRecvNs = t;
        const len = data.length;
        bytesTotal += len;
        if (len !== payload.length) errors++;
        if (rtts) rtts.push(Number(t - st.stamps.shift()) / 1000); // µs
        if (!maybeDone(st)) sendOne(ws, st);
      });
      const initial = Math.min(window, perConn);
      for (let k = 0; k < initial; k++) sendOne(ws, st);
    });

    // Hard cap: after the deadline, give in-flight messages 5 s to drain.
    const msLeft = Math.max(0, Number(deadlineNs - nowNs()) / 1e6);
    const drainTimer = setTimeout(() => finish(true), msLeft + 5000);
  });
}

async function runEcho(o) {
  const payload = Buffer.alloc(o.size, 0x61);
  const frame = prebuiltFrame(payload);
  const tConn0 = nowNs();
  const sockets = await connectAll(o.url, o.connections, o["connect-batch"], o["connect-timeout"]);
  const connectS = nsToS(nowNs() - tConn0);

  if (o.warmup > 0) {
    const warmDeadline = nowNs() + BigInt(Math.round(Math.min(o.duration, 5) * 1e9));
    await echoPhase(sockets, payload, frame, o.warmup, o.window, warmDeadline, false);
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
    connect_s: connectS,
    sent: r.sentTotal,
    received: r.recvTotal,
    errors: r.errors + (r.sentTotal - r.recvTotal),
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
