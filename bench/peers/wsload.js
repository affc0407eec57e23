"use strict";
// The Node engine of VORA's WebSocket load generator (`node wsload.js [--source ADDRESS]`).
//
// bench/wsclient.py's LoadClient is the reference: this file speaks its protocol (one JSON
// command a line on stdin, one JSON reply a line on stdout) with the same reply fields, for the
// commands the reconnect storm (bench/scenarios/storm.py) and open_primed use: open, status,
// wait_primed, wait_heartbeat, reset, failover, expect, storm_report, close and exit (plus clock,
// which lets the tests check that this process reads the benchmark's clock). Why a second engine:
// on a 2-core machine every core-second the client takes is one the server cannot; measured in the
// storm, this one took 0.33-0.35 cores where the Python one took 0.38-0.40 (most of either's CPU is
// the events it receives, not the reconnects), about half a second of the storm's 14-15.
//
// WebSocket only: an event-stream URL (/vora/sse) is refused with an error, as are permessage-
// deflate (open's compress) and resume, which only the Python engine implements.
//
// Timing: the benchmark stamps events and its storm log with Python's time.monotonic_ns(), which
// is CLOCK_MONOTONIC; process.hrtime.bigint() reads the same clock on Linux (libuv's uv_hrtime),
// so stamps compare across the two processes (tests/bench/test_load_client.py checks it).
// Nanoseconds are kept as Numbers: exact below 2^53 ns (104 days of uptime), within a few ns after.

const { PerformanceObserver } = require("node:perf_hooks");
const WebSocket = require("ws");
const {
  addLatency,
  countSequence,
  latencyReport,
  newStats,
  owedEvents,
  percentile,
  round,
  serveCommands,
} = require("./commands.js");

const CONNECT_TIMEOUT_MS = 30_000; // the Python client's CONNECT_TIMEOUT; ws times the whole handshake
const RECEIPTS_KEPT = 1000; // receipt times a reconnected socket keeps, for the catch-up time
const OPEN_ATTEMPTS = 5; // refused for load (429/503) or failed connects are tried again, as real clients do
const LOAD_REFUSALS = new Set([429, 503]);
const MAX_MESSAGE = 1 << 20; // aiohttp's max_msg_size in the Python client
const CLOSE_TIMEOUT_MS = 5_000;
const CLOSE_CONCURRENCY = 500;

const nowNs = () => Number(process.hrtime.bigint());
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function sourceAddress(argv) {
  const at = argv.indexOf("--source");
  return at >= 0 ? argv[at + 1] : undefined;
}

// Every connection is bound to this local address when given (one address has only the ephemeral
// ports towards one server port), as `python -m bench.wsclient --source`.
const SOURCE = sourceAddress(process.argv.slice(2));

// ---- arithmetic that must match the Python reference ----

// Python's f"{w:g}" for the windows' keys (six significant digits; windows never need exponents).
const formatG = (w) => String(Number(w.toPrecision(6)));

const ascending = (values) => Float64Array.from(values).sort();

function countInto(table, key) {
  table[key] = (table[key] || 0) + 1;
}

function isEventStream(url) {
  return new URL(url).pathname.endsWith("/sse");
}

function refuseEventStream(url) {
  if (isEventStream(url)) {
    throw new Error(`the Node engine holds WebSockets only, not the event stream ${url} (use the Python engine)`);
  }
}

// ---- state ----

// One socket and what it has seen: Held of bench/wsclient.py, field for field.
class Held {
  constructor(url) {
    this.ws = null;
    this.url = url;
    this.identity = null;
    this.first = null;
    this.last = null;
    this.lastEventId = null;
    this.received = 0;
    this.closed = false;
    this.closeCode = null;
    this.terminated = null;
    this.reconnectAttempts = 0;
    this.window = null; // the last reconnectWindowSeconds received (channelOpened, heartbeat)
    this.heartbeats = 0;
    this.firstWindow = null; // the window its last first attempt after a drop was drawn from
    this.firstWindowAnnounced = false; // ... and whether the server had announced it (else `first`)
    this.droppedAt = null; // the last sequence number it had when it first dropped
    this.reconnectedNs = null; // when the socket was last opened again after a drop
    this.firstTryNs = null; // when its first reconnect attempt started
    this.receivedNs = new Map(); // sequence -> receipt, since the reconnection
    this.abandoned = false; // set by close: a late handshake or a pending backoff must not revive it
  }
}

let held = [];
let stats = newStats();
let failover = null; // {url, base, cap, first, handshakeFailures, handshakeMs} once armed
let closing = false;

// Node cannot switch its collector off for a phase as the Python client does, so its pauses are
// reported as they happened (client_gc): a pause of the load generator reads as server latency.
const collector = {
  pauses: [],
  report() {
    const pauses = this.pauses;
    this.pauses = [];
    return {
      count: pauses.length,
      total_ms: round(
        pauses.reduce((a, b) => a + b, 0),
        2,
      ),
      max_ms: round(
        pauses.reduce((a, b) => Math.max(a, b), 0),
        2,
      ),
    };
  },
};
new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) collector.pauses.push(entry.duration);
}).observe({ entryTypes: ["gc"] });

// ---- one connection ----

function failureName(err) {
  if (err.status !== undefined) return `HTTP ${err.status}`;
  if (err.code) return err.code; // ECONNREFUSED, ECONNRESET, ...: what the kernel said
  if (/timed out/.test(err.message || "")) return "TimeoutError";
  return err.name || "Error";
}

// Retry-After in seconds (0 when absent or not a number), as retry_after_of().
function retryAfterOf(header) {
  const seconds = Number(header);
  return Number.isFinite(seconds) ? Math.max(0, seconds) : 0;
}

// Open a WebSocket for held. onOpen runs inside ws's "open" event, before any frame can be
// delivered: the frames that follow the 101 in the same read are emitted on a nextTick, which
// runs before an awaiting caller would resume, and they must find the socket's state updated.
function connect(url, held, onOpen) {
  return new Promise((resolve, reject) => {
    let settled = false;
    const fail = (err) => {
      if (settled) return;
      settled = true;
      reject(err);
    };
    const ws = new WebSocket(url, {
      perMessageDeflate: false, // the Python client offers none unless asked (compress=0)
      handshakeTimeout: CONNECT_TIMEOUT_MS,
      maxPayload: MAX_MESSAGE,
      localAddress: SOURCE,
    });
    // A refused handshake (503 with Retry-After, 401, ...): its status and Retry-After are wanted.
    ws.once("unexpected-response", (req, res) => {
      const err = new Error(`HTTP ${res.statusCode}`);
      err.status = res.statusCode;
      err.retryAfter = retryAfterOf(res.headers["retry-after"]);
      res.resume();
      ws.terminate(); // aborts the request; its error event lands in the listener below
      fail(err);
    });
    // Always listened to: an error after the promise settled would otherwise crash the process.
    // Every error of an open socket is followed by "close", which is where a drop is handled.
    ws.on("error", fail);
    ws.once("open", () => {
      settled = true;
      if (held.abandoned) {
        ws.terminate();
        reject(new Error("closed by the benchmark"));
        return;
      }
      held.ws = ws;
      onOpen();
      ws.on("message", (data, isBinary) => {
        if (isBinary) return;
        try {
          onText(held, data);
        } catch (err) {
          // Not JSON, or not an envelope: said on stderr (the process log) rather than ending the process.
          console.error(`a message on ${held.url}: ${err.message}`);
        }
      });
      ws.on("close", (code) => onClose(held, code));
      resolve();
    });
  });
}

function onText(held, data) {
  const now = nowNs();
  const envelope = JSON.parse(data.toString());
  const sequence = envelope.sequenceNumber;
  if (sequence === undefined || sequence === null) {
    stats.lifecycle += 1;
    const kind = envelope.type;
    const body = envelope.data || {};
    if (kind === "channelTerminated") {
      held.terminated = String(body.reason);
    } else if ((kind === "channelOpened" || kind === "heartbeat") && "reconnectWindowSeconds" in body) {
      held.window = Number(body.reconnectWindowSeconds); // the latest wins (docs/clients.md rule 7)
    }
    if (kind === "heartbeat") held.heartbeats += 1;
    return;
  }
  held.identity = envelope.identity;
  held.lastEventId = envelope.eventId;
  if (!countSequence(stats, held, sequence)) return;
  held.received += 1;
  const body = envelope.data || {};
  const marker = body.note || body.reason || "";
  if (held.reconnectedNs !== null && held.receivedNs.size < RECEIPTS_KEPT) held.receivedNs.set(sequence, now);
  if (typeof marker === "string" && marker.startsWith("t")) {
    // The publisher's t<monotonic ns>: publish-to-receive latency on one machine, one clock.
    addLatency(stats, now, (now - Number(marker.slice(1))) / 1e6);
  }
  const seconds = now / 1e9;
  if (stats.firstReceive === null) stats.firstReceive = seconds;
  stats.lastReceive = seconds;
}

function onClose(held, code) {
  held.closed = true;
  held.closeCode = code; // 1006 when the server vanished (aiohttp says 1000 on a bare EOF, 1006 on a reset)
  if (failover === null || closing || held.abandoned) return;
  if (held.reconnectedNs === null) held.droppedAt = held.last;
  reconnect(held, failover).catch((err) => console.error(`reconnect: ${err.stack || err}`));
}

// ---- failover: the storm's reconnects ----

// The first attempt's window: the server's last reconnectWindowSeconds, else `first` (the old 20 s).
const firstWindow = (fo, announced) => (announced === null ? fo.first : announced);

// Seconds to wait before an attempt: full jitter, never sooner than a refusal's Retry-After.
function waitBefore(fo, attempt, retryAfter, announced) {
  const window = attempt === 0 ? firstWindow(fo, announced) : Math.min(fo.cap, fo.base * 2 ** attempt);
  return retryAfter + Math.random() * window;
}

// Open the socket again at the failover URL with its lastEventId, backing off between attempts.
async function reconnect(held, fo) {
  const token = new URL(held.url).searchParams.get("token");
  if (token === null) throw new Error(`no token to reconnect with in ${held.url}`);
  let url = `${fo.url}?token=${encodeURIComponent(token)}`;
  if (held.lastEventId !== null) url += `&lastEventId=${encodeURIComponent(held.lastEventId)}`;
  // As docs/clients.md rules 7-10 advise: the first attempt within the window the server last announced.
  const announced = held.window;
  held.firstWindow = firstWindow(fo, announced);
  held.firstWindowAnnounced = announced !== null;
  let attempt = 0;
  let retryAfter = 0;
  while (!closing && !held.abandoned) {
    await sleep(waitBefore(fo, attempt, retryAfter, announced) * 1000);
    if (closing || held.abandoned) return;
    held.reconnectAttempts += 1;
    retryAfter = 0;
    const triedNs = nowNs();
    if (held.firstTryNs === null) held.firstTryNs = triedNs;
    try {
      await connect(url, held, () => {
        const openedNs = nowNs();
        fo.handshakeMs.push((openedNs - triedNs) / 1e6);
        held.closed = false;
        held.closeCode = null;
        held.reconnectedNs = openedNs;
      });
      return;
    } catch (err) {
      if (held.abandoned) return;
      countInto(fo.handshakeFailures, failureName(err));
      retryAfter = err.retryAfter || 0;
    }
    attempt += 1;
  }
}

// When a reconnected socket had everything published before its reconnection, or null.
function caughtUpNs(held, published) {
  // bisect_left(published, (reconnected_ns, 0)): the first entry published at or after it was back.
  let lo = 0;
  let hi = published.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (published[mid][0] < held.reconnectedNs) lo = mid + 1;
    else hi = mid;
  }
  const owed = lo ? published[lo - 1][1] : 0; // the last number published before it was back
  if (owed <= (held.droppedAt || 0)) return held.reconnectedNs; // nothing was published while it was away
  const received = held.receivedNs.get(owed);
  return received === undefined ? null : received;
}

// ---- commands ----

// A semaphore: at most limit calls of run() at a time, the others queued in order.
class Gate {
  constructor(limit) {
    this.free = limit;
    this.waiting = [];
  }

  async run(task) {
    if (this.free > 0) this.free -= 1;
    else await new Promise((resolve) => this.waiting.push(resolve));
    try {
      return await task();
    } finally {
      const next = this.waiting.shift();
      if (next) next();
      else this.free += 1;
    }
  }
}

function status() {
  const closedCodes = {};
  const terminated = {};
  let closed = 0;
  for (const h of held) {
    if (h.closed) {
      closed += 1;
      countInto(closedCodes, String(h.closeCode));
    }
    if (h.terminated) countInto(terminated, h.terminated);
  }
  const cpu = process.cpuUsage();
  return {
    held: held.length - closed,
    closed,
    close_codes: closedCodes,
    terminated,
    cpu_seconds: round((cpu.user + cpu.system) / 1e6, 3),
  };
}

// Open one socket per URL, concurrency at a time; say how many opened and how long it took.
async function open(urls, concurrency, compress) {
  if (compress) throw new Error("the Node engine offers no permessage-deflate (compress): use the Python engine");
  urls.forEach(refuseEventStream);
  const gate = new Gate(concurrency);
  const failed = {};
  // Refusals and failed connects retried as the README advises clients (after any Retry-After).
  const retried = {};
  const started = nowNs();

  async function one(url) {
    const h = new Held(url);
    for (let attempt = 0; attempt < OPEN_ATTEMPTS; attempt++) {
      let retryAfter = 0;
      const last = attempt === OPEN_ATTEMPTS - 1;
      try {
        await gate.run(() => connect(url, h, () => held.push(h)));
        return;
      } catch (err) {
        const name = failureName(err);
        // A refusal other than for load fails at once; a connect the kernel refused is tried again.
        if ((err.status !== undefined && !LOAD_REFUSALS.has(err.status)) || last) {
          countInto(failed, name);
          return;
        }
        countInto(retried, name);
        retryAfter = err.retryAfter || 0;
      }
      await sleep((retryAfter + Math.random()) * 1000);
    }
  }

  await Promise.all(urls.map(one));
  const failures = Object.values(failed).reduce((a, b) => a + b, 0);
  return {
    opened: urls.length - failures,
    deflate_window_bits: held.length ? 0 : null, // 0: no permessage-deflate
    failed,
    retried,
    seconds: round((nowNs() - started) / 1e9, 3),
    ...status(),
  };
}

// Wait until every open socket has received its identity's first event.
async function waitPrimed(first, timeout) {
  const deadline = Date.now() + timeout * 1000;
  while (Date.now() < deadline && held.some((h) => !h.closed && h.last === null)) await sleep(20);
  const unprimed = held.filter((h) => !h.closed && h.last === null).length;
  // A first event after the primer: the primer was missed. Before it: a replay since the session
  // began (what VORA promises), only counted.
  let wrongStart = 0;
  let replayed = 0;
  for (const h of held) {
    if (h.first === null || h.identity === null || !(h.identity in first)) continue;
    if (h.first > first[h.identity]) wrongStart += 1;
    else if (h.first < first[h.identity]) replayed += 1;
  }
  return { unprimed, wrong_start: wrongStart, replayed_before_primer: replayed, ...status() };
}

// Wait until every open socket has had a heartbeat; say how many have, and their windows.
async function waitHeartbeat(timeout) {
  const deadline = Date.now() + timeout * 1000;
  while (Date.now() < deadline && held.some((h) => !h.closed && h.heartbeats === 0)) await sleep(100);
  const windows = ascending(held.filter((h) => h.window !== null).map((h) => h.window));
  return {
    with_heartbeat: held.filter((h) => h.heartbeats).length,
    window_p50: percentile(windows, 50),
    window_max: windows.length ? windows[windows.length - 1] : 0,
    ...status(),
  };
}

// Start a measured phase: counting anew (sequence state is kept), or on from the last with keep.
function reset(keep) {
  if (!keep) stats = newStats();
  collector.report(); // the phase's pauses start here
  return { reset: true };
}

// Wait until every open socket reached its identity's final sequence number, then report.
async function expect(final, timeout) {
  const deadline = Date.now() + timeout * 1000;
  // A dropped socket is waited for too while it is reconnecting.
  const behind = (h) => (!h.closed || failover !== null) && h.identity && (h.last || 0) < (final[h.identity] || 0);
  while (Date.now() < deadline && held.some(behind)) await sleep(20);
  const { missing, missingOnClosed } = owedEvents(held, final);
  return {
    deliveries: stats.deliveries,
    duplicates: stats.duplicates,
    gaps: stats.gaps,
    missing_at_end: missing,
    missing_on_closed_sockets: missingOnClosed, // events still in the stream for them
    lifecycle: stats.lifecycle,
    ...latencyReport(stats),
    client_gc: collector.report(),
    first_receive: stats.firstReceive,
    last_receive: stats.lastReceive,
    ...status(),
  };
}

// From now on, reopen every socket that drops at url (its token and lastEventId kept).
function armFailover(url, base, cap, first) {
  refuseEventStream(url);
  failover = { url, base, cap, first, handshakeFailures: {}, handshakeMs: [] };
  return { armed: true };
}

// How many dropped sockets came back and caught up, and how long after sinceNs (storm_report).
function stormReport(sinceNs, published) {
  const back = [];
  const caught = [];
  for (const h of held) {
    if (h.reconnectedNs === null || h.closed) continue;
    back.push((h.reconnectedNs - sinceNs) / 1e9);
    const caughtNs = caughtUpNs(h, published[h.identity || ""] || []);
    if (caughtNs !== null) caught.push((caughtNs - sinceNs) / 1e9);
  }
  const backs = ascending(back);
  const caughts = ascending(caught);
  const attempts = held.map((h) => h.reconnectAttempts);
  const failures = failover ? failover.handshakeFailures : {};
  const handshakes = ascending(failover ? failover.handshakeMs : []);
  const firstTries = ascending(held.filter((h) => h.firstTryNs !== null).map((h) => (h.firstTryNs - sinceNs) / 1e9));
  const dropped = held.filter((h) => h.firstWindow !== null);
  const windows = ascending(dropped.map((h) => h.firstWindow));
  const windowCounts = {};
  for (const w of windows) countInto(windowCounts, formatG(w));
  const lastOf = (ordered, digits) => (ordered.length ? round(ordered[ordered.length - 1], digits) : null);
  return {
    sockets: held.length,
    back: backs.length,
    caught_up: caughts.length,
    all_back_seconds: lastOf(backs, 3),
    back_p50_seconds: round(percentile(backs, 50), 3),
    all_caught_up_seconds: lastOf(caughts, 3),
    caught_up_p50_seconds: round(percentile(caughts, 50), 3),
    handshake_attempts: attempts.reduce((a, b) => a + b, 0),
    handshake_failures: { ...failures },
    most_attempts: attempts.reduce((a, b) => Math.max(a, b), 0),
    // Where the time goes: when clients first tried (their backoff), and how long B took to answer.
    first_try_p50_seconds: round(percentile(firstTries, 50), 3),
    first_try_last_seconds: lastOf(firstTries, 3),
    // The window each dropped socket drew its first attempt from: the server's last announced one, or `first`.
    first_window_seconds: {
      announced: dropped.filter((h) => h.firstWindowAnnounced).length,
      fallback: dropped.filter((h) => !h.firstWindowAnnounced).length,
      min: windows.length ? windows[0] : 0, // 0: no socket dropped yet
      p50: percentile(windows, 50),
      max: windows.length ? windows[windows.length - 1] : 0,
    },
    first_window_counts: windowCounts, // seconds -> sockets
    handshake_ms: {
      p50: round(percentile(handshakes, 50), 1),
      p99: round(percentile(handshakes, 99), 1),
      max: lastOf(handshakes, 1),
    },
    ...status(),
  };
}

// Close every held socket (a WebSocket close handshake each) and forget them.
async function close() {
  const started = nowNs();
  closing = true;
  const gate = new Gate(CLOSE_CONCURRENCY);
  const count = held.length;
  for (const h of held) h.abandoned = true; // a pending backoff or handshake must not reopen it
  const closeOne = (h) =>
    new Promise((resolve) => {
      const timer = setTimeout(() => {
        h.ws.terminate();
        resolve();
      }, CLOSE_TIMEOUT_MS);
      h.ws.once("close", () => {
        clearTimeout(timer);
        resolve();
      });
      h.ws.close();
    });
  await Promise.all(held.filter((h) => !h.closed).map((h) => gate.run(() => closeOne(h))));
  held = [];
  stats = newStats();
  failover = null;
  closing = false;
  return { closed: count, seconds: round((nowNs() - started) / 1e9, 3) };
}

async function handle(command) {
  switch (command.cmd) {
    case "open":
      return open(command.urls, command.concurrency ?? 200, command.compress ?? 0);
    case "wait_heartbeat":
      return waitHeartbeat(command.timeout ?? 40);
    case "wait_primed":
      return waitPrimed(command.first, command.timeout ?? 30);
    case "reset":
      return reset(Boolean(command.keep));
    case "expect":
      return expect(command.final, command.timeout ?? 30);
    case "close":
      return close();
    case "failover":
      return armFailover(command.url, command.base, command.cap, command.first);
    case "storm_report":
      return stormReport(command.since_ns, command.published);
    case "status":
      return status();
    case "clock":
      return { monotonic_ns: process.hrtime.bigint().toString() }; // a string: exact past 2^53
    case "exit":
      return { bye: true };
    case "resume":
      return { error: "resume is not implemented by the Node engine (use the Python engine)" };
    default:
      return { error: `unknown command '${command.cmd}'` };
  }
}

async function main() {
  await serveCommands(handle, close);
}

main().catch((err) => {
  console.error(err.stack || err);
  process.exit(2);
});
