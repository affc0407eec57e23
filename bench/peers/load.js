"use strict";
// The peers' load generator (`node load.js ws|socketio`): bench/wsclient.py's commands and replies
// (open, wait_primed, reset, expect, close, status, exit; one JSON line each way), in Node, so that
// every server of the peers group is driven by the same client runtime.
//   ws        a `ws` WebSocket per URL (VORA's /vora/ws?token=..., the relay's /?identity=...),
//             JSON envelopes in text frames, permessage-deflate not offered (as bench/wsclient.py)
//   socketio  a socket.io-client per URL (http://host:port/?identity=...), its own connection
//             (forceNew), WebSocket transport only, envelopes as "event" events
// Each socket checks that sequenceNumber grows by exactly one; the latency of an event is the
// monotonic clock on receipt minus the `t<ns>` its publisher put in data.note or data.reason.

const {
  addLatency,
  countSequence,
  latencyReport,
  newStats,
  owedEvents,
  round,
  serveCommands,
} = require("./commands.js");

const PROTOCOL = process.argv[2];
const CONNECT_TIMEOUT_MS = 30_000;
const OPEN_ATTEMPTS = 5; // as bench/wsclient.py: refused for load (429/503) or failed connects are retried

let held = [];
let stats = newStats();

function onEnvelope(socket, envelope) {
  const now = process.hrtime.bigint();
  const sequence = envelope.sequenceNumber;
  if (sequence === undefined || sequence === null) {
    stats.lifecycle += 1;
    if (envelope.type === "channelTerminated") socket.terminated = String((envelope.data || {}).reason);
    return;
  }
  socket.identity = envelope.identity;
  if (!countSequence(stats, socket, sequence)) return;
  const data = envelope.data || {};
  const marker = data.note || data.reason || "";
  if (marker.startsWith("t")) {
    addLatency(stats, Number(now), Number(now - BigInt(marker.slice(1))) / 1e6);
  }
  const seconds = Number(now) / 1e9;
  if (stats.firstReceive === null) stats.firstReceive = seconds;
  stats.lastReceive = seconds;
}

function wsConnect(url, socket) {
  const WebSocket = require("ws");
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { perMessageDeflate: false, handshakeTimeout: CONNECT_TIMEOUT_MS });
    ws.once("unexpected-response", (req, res) => {
      const error = new Error(`HTTP ${res.statusCode}`);
      error.status = res.statusCode;
      error.retryAfter = Number(res.headers["retry-after"]) || 0;
      req.destroy();
      reject(error);
    });
    ws.once("error", reject);
    ws.once("open", () => {
      ws.removeListener("error", reject);
      ws.on("error", () => {});
      ws.on("message", (data, isBinary) => {
        if (!isBinary) onEnvelope(socket, JSON.parse(data.toString()));
      });
      ws.on("close", (code) => {
        socket.closed = true;
        socket.closeCode = String(code);
      });
      socket.close = () => ws.close();
      resolve();
    });
  });
}

function socketIoConnect(url, socket) {
  const { io } = require("socket.io-client");
  const parsed = new URL(url);
  return new Promise((resolve, reject) => {
    const client = io(parsed.origin, {
      transports: ["websocket"],
      forceNew: true,
      reconnection: false, // a drop is counted, not hidden
      timeout: CONNECT_TIMEOUT_MS,
      query: Object.fromEntries(parsed.searchParams),
    });
    client.once("connect_error", (err) => {
      client.close();
      reject(err);
    });
    client.once("connect", () => {
      client.on("event", (envelope) => onEnvelope(socket, envelope));
      client.on("disconnect", (reason) => {
        socket.closed = true;
        socket.closeCode = reason;
      });
      socket.close = () => client.disconnect();
      resolve();
    });
  });
}

const connect = PROTOCOL === "socketio" ? socketIoConnect : wsConnect;

async function open(urls, concurrency) {
  const started = process.hrtime.bigint();
  const failed = {};
  const retried = {};
  let next = 0;
  const count = (table, key) => (table[key] = (table[key] || 0) + 1);
  async function one(url) {
    for (let attempt = 0; attempt < OPEN_ATTEMPTS; attempt++) {
      const socket = { identity: null, first: null, last: null, closed: false, closeCode: null, terminated: null };
      try {
        await connect(url, socket);
        held.push(socket);
        return;
      } catch (err) {
        const reason = err.status ? `HTTP ${err.status}` : err.code || err.message || "error";
        const refusedForLoad = err.status === undefined || err.status === 429 || err.status === 503;
        if (!refusedForLoad || attempt === OPEN_ATTEMPTS - 1) {
          count(failed, reason);
          return;
        }
        count(retried, reason);
        await new Promise((resolve) => setTimeout(resolve, ((err.retryAfter || 0) + Math.random()) * 1000));
      }
    }
  }
  async function lane() {
    while (next < urls.length) await one(urls[next++]);
  }
  await Promise.all(Array.from({ length: Math.min(concurrency, urls.length) }, lane));
  const failures = Object.values(failed).reduce((a, b) => a + b, 0);
  return {
    opened: urls.length - failures,
    failed,
    retried,
    seconds: round(Number(process.hrtime.bigint() - started) / 1e9, 3),
    ...status(),
  };
}

function status() {
  const closed = held.filter((s) => s.closed);
  const closeCodes = {};
  const terminated = {};
  for (const s of closed) closeCodes[s.closeCode] = (closeCodes[s.closeCode] || 0) + 1;
  for (const s of held) if (s.terminated) terminated[s.terminated] = (terminated[s.terminated] || 0) + 1;
  const cpu = process.cpuUsage();
  return {
    held: held.length - closed.length,
    closed: closed.length,
    close_codes: closeCodes,
    terminated,
    cpu_seconds: round((cpu.user + cpu.system) / 1e6, 3),
    rss_mib: round(process.memoryUsage().rss / 2 ** 20, 1), // the load generator's own memory
  };
}

const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function waitPrimed(first, timeout) {
  const deadline = Date.now() + timeout * 1000;
  while (Date.now() < deadline && held.some((s) => !s.closed && s.last === null)) await pause(20);
  return {
    unprimed: held.filter((s) => !s.closed && s.last === null).length,
    // First event after the primer: the primer was missed. Before it: a replay since the session began, counted apart.
    wrong_start: held.filter((s) => s.first !== null && s.identity in first && s.first > first[s.identity]).length,
    replayed_before_primer: held.filter((s) => s.first !== null && s.identity in first && s.first < first[s.identity])
      .length,
    ...status(),
  };
}

async function expect(final, timeout) {
  const deadline = Date.now() + timeout * 1000;
  const behind = () => held.some((s) => !s.closed && s.identity && (s.last || 0) < (final[s.identity] || 0));
  while (Date.now() < deadline && behind()) await pause(20);
  const { missing, missingOnClosed } = owedEvents(held, final);
  return {
    deliveries: stats.deliveries,
    duplicates: stats.duplicates,
    gaps: stats.gaps,
    missing_at_end: missing,
    missing_on_closed_sockets: missingOnClosed,
    lifecycle: stats.lifecycle,
    ...latencyReport(stats),
    first_receive: stats.firstReceive,
    last_receive: stats.lastReceive,
    ...status(),
  };
}

async function close() {
  const started = process.hrtime.bigint();
  const count = held.length;
  for (const s of held) if (!s.closed) s.close();
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline && held.some((s) => !s.closed)) await pause(20);
  held = [];
  stats = newStats();
  return { closed: count, seconds: round(Number(process.hrtime.bigint() - started) / 1e9, 3) };
}

async function handle(command) {
  switch (command.cmd) {
    case "open":
      return open(command.urls, command.concurrency || 200);
    case "wait_primed":
      return waitPrimed(command.first, command.timeout || 30);
    case "reset":
      stats = newStats();
      return { reset: true };
    case "expect":
      return expect(command.final, command.timeout || 30);
    case "close":
      return close();
    case "status":
      return status();
    case "exit":
      return { bye: true };
    default:
      return { error: `unknown command ${command.cmd}` };
  }
}

async function main() {
  if (PROTOCOL !== "ws" && PROTOCOL !== "socketio") throw new Error(`protocol must be ws or socketio, not ${PROTOCOL}`);
  await serveCommands(handle, close);
}

main().catch((err) => {
  console.error(err.stack || err);
  process.exit(2);
});
