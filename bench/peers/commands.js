"use strict";
// What the benchmark's two Node load generators share (load.js for the peers group, wsload.js for
// the reconnect storm): the arithmetic that must give bench/wsclient.py's figures, the counters a
// phase keeps, and the loop that answers one JSON command a line on stdin with one JSON reply a
// line on stdout, as bench/wsclient.py's serve_commands does.

const readline = require("node:readline");

// Python's round(): halves go to the even neighbour, so percentile ranks match bench/wsclient.py's.
function roundHalfEven(x) {
  const floor = Math.floor(x);
  const diff = x - floor;
  if (diff > 0.5) return floor + 1;
  if (diff < 0.5) return floor;
  return floor % 2 === 0 ? floor : floor + 1;
}

function round(value, digits) {
  const scale = 10 ** digits;
  return Math.round(value * scale) / scale;
}

// percentile() of bench/wsclient.py: nearest rank of an ascending list, 0 for an empty one.
function percentile(ordered, q) {
  if (ordered.length === 0) return 0;
  const rank = Math.max(0, Math.min(ordered.length - 1, roundHalfEven((q / 100) * ordered.length + 0.5) - 1));
  return ordered[rank];
}

// Latency is also kept as its worst per 100 ms of receipt time, the bucket keyed by its number (a Number:
// monotonic ns / 1e8); a bucket whose worst latency is above STALL_MS is reported as a stall.
const STALL_BUCKET_NS = 100_000_000;
const STALL_MS = 10;

// What a phase counts across all sockets, from its start (reset) to expect.
function newStats() {
  return {
    deliveries: 0,
    duplicates: 0,
    gaps: 0,
    lifecycle: 0,
    latencies: [],
    worstByBucket: new Map(),
    firstReceive: null,
    lastReceive: null,
  };
}

// Check an event's sequenceNumber against the socket's last (it must grow by exactly one), counting
// it as a delivery, a duplicate (false: the caller skips it) or a delivery after a gap.
function countSequence(stats, socket, sequence) {
  if (socket.last === null) {
    socket.first = sequence;
  } else if (sequence <= socket.last) {
    stats.duplicates += 1;
    return false;
  } else if (sequence !== socket.last + 1) {
    stats.gaps += sequence - socket.last - 1;
  }
  socket.last = sequence;
  stats.deliveries += 1;
  return true;
}

// Count an event's latency (ms), received at receivedNs (monotonic ns, a Number), into the phase's stats.
function addLatency(stats, receivedNs, latency) {
  stats.latencies.push(latency);
  const bucket = Math.floor(receivedNs / STALL_BUCKET_NS);
  if (latency > (stats.worstByBucket.get(bucket) || 0)) stats.worstByBucket.set(bucket, latency);
}

// The latency fields of expect's reply, as bench/wsclient.py's: the phase's percentiles, and its stalls.
function latencyReport(stats) {
  const ordered = Float64Array.from(stats.latencies).sort();
  const buckets = [...stats.worstByBucket.keys()].sort((a, b) => a - b);
  const start = buckets.length ? buckets[0] : 0;
  const stalls = buckets
    .filter((bucket) => stats.worstByBucket.get(bucket) > STALL_MS)
    .slice(0, 100)
    .map((bucket) => [round(((bucket - start) * STALL_BUCKET_NS) / 1e9, 1), round(stats.worstByBucket.get(bucket), 1)]);
  const sum = ordered.reduce((a, b) => a + b, 0);
  return {
    latency_samples: ordered.length,
    p50_ms: round(percentile(ordered, 50), 3),
    p99_ms: round(percentile(ordered, 99), 3),
    max_ms: ordered.length ? round(ordered[ordered.length - 1], 3) : 0,
    mean_ms: ordered.length ? round(sum / ordered.length, 3) : 0,
    stalls, // [seconds into the phase, worst latency ms] per 100 ms bucket over STALL_MS, the first 100
  };
}

// Count the events still owed to the sockets at the end: in all, and to those closed (still in the stream for them).
function owedEvents(held, final) {
  let missing = 0;
  let missingOnClosed = 0;
  for (const socket of held) {
    if (!socket.identity) continue;
    const owed = Math.max(0, (final[socket.identity] || 0) - (socket.last || 0));
    missing += owed;
    if (socket.closed) missingOnClosed += owed;
  }
  return { missing, missingOnClosed };
}

// Answer each command with handle(command) until "exit", then close() and end the process.
async function serveCommands(handle, close) {
  const lines = readline.createInterface({ input: process.stdin });
  for await (const line of lines) {
    const command = JSON.parse(line);
    let reply;
    try {
      reply = await handle(command);
    } catch (err) {
      reply = { error: `${err.name}: ${err.message}` };
    }
    process.stdout.write(`${JSON.stringify(reply)}\n`);
    if (command.cmd === "exit") break;
  }
  await close();
  process.exit(0);
}

module.exports = {
  addLatency,
  countSequence,
  latencyReport,
  newStats,
  owedEvents,
  percentile,
  round,
  roundHalfEven,
  serveCommands,
};
