"use strict";
// The publisher of a peer (`node publish.js KIND`), driven by JSON lines on stdin, one reply a line
// on stdout, as bench/wsclient.py is. It publishes through Redis the way each stack publishes from
// another process than its servers:
//   socketio-streams  a Socket.IO server that listens nowhere, with the redis-streams-adapter
//                     (no emitter package exists for it): io.to(identity).emit("event", envelope)
//   socketio-redis    @socket.io/redis-emitter: emitter.to(identity).emit("event", envelope)
//   ws                PUBLISH "IDENTITY ENVELOPE" on the relay's channel
// Envelopes are VORA's (eventId, sequenceNumber, identity, type, timestamp, data), numbered per
// identity from 1; data carries the monotonic clock as `t<ns>` in note or reason, the clock
// bench/wsclient.py and load.js read on receipt (process.hrtime is CLOCK_MONOTONIC, as Python's
// time.monotonic). Redis commands issued in one turn of the event loop leave in one write, so
// this publisher pipelines a burst and a paced phase costs one command per event.
//
// Commands: {"cmd": "one", "identity", "type", "data"} -> {"sequence"};
//           {"cmd": "publish", "ids", "count", "rate" (null: flat out)} -> the phase's report;
//           {"cmd": "exit"}.

const readline = require("node:readline");
const { createClient } = require("redis");

const KIND = process.argv[2];
const REDIS_URL = process.env.PEER_REDIS_URL;
const PREFIX = process.env.PEER_PREFIX || "bench:peers";
const TYPES = ["callRinging", "presence", "recordingStarted"];
const YIELD_EVERY = 200; // a flat-out phase lets the client write its pipeline every so many events

const sequences = new Map();

function stamp() {
  return `t${process.hrtime.bigint()}`;
}

function monotonicSeconds() {
  return Number(process.hrtime.bigint()) / 1e9;
}

function eventData(type, n) {
  if (type === "presence") return { status: "busy", note: stamp() };
  if (type.startsWith("recording")) return { callId: `c-${n}`, recordingId: `r-${n}`, reason: stamp() };
  return { callId: `c-${n}`, reason: stamp() };
}

function envelope(identity, type, data) {
  const sequence = (sequences.get(identity) || 0) + 1;
  sequences.set(identity, sequence);
  return {
    eventId: `${Date.now()}-${sequence}`,
    sequenceNumber: sequence,
    identity,
    type,
    timestamp: new Date().toISOString(),
    data,
  };
}

async function connect() {
  const client = createClient({ url: REDIS_URL });
  client.on("error", (err) => console.error(`redis: ${err.message}`));
  await client.connect();
  if (KIND === "ws") {
    const channel = `${PREFIX}:ws`;
    return (identity, event) => {
      client.publish(channel, `${identity} ${JSON.stringify(event)}`).catch((err) => console.error(err.message));
    };
  }
  if (KIND === "socketio-redis") {
    const { Emitter } = require("@socket.io/redis-emitter");
    const emitter = new Emitter(client, { key: PREFIX });
    return (identity, event) => emitter.to(identity).emit("event", event);
  }
  if (KIND === "socketio-streams") {
    const { Server } = require("socket.io");
    const { createAdapter } = require("@socket.io/redis-streams-adapter");
    const io = new Server();
    io.adapter(createAdapter(client, { streamName: `${PREFIX}:stream`, sessionKeyPrefix: `${PREFIX}:session:` }));
    return (identity, event) => io.to(identity).emit("event", event);
  }
  throw new Error(`unknown peer kind ${KIND}`);
}

async function publishPhase(send, ids, count, rate) {
  const started = monotonicSeconds();
  const final = {};
  let worstLag = 0;
  for (let n = 0; n < count; n++) {
    if (rate) {
      const due = started + n / rate;
      const wait = due - monotonicSeconds();
      if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait * 1000));
      else worstLag = Math.max(worstLag, -wait);
    } else if (n % YIELD_EVERY === 0) {
      await new Promise((resolve) => setImmediate(resolve));
    }
    const identity = ids[n % ids.length];
    const type = TYPES[n % TYPES.length];
    const event = envelope(identity, type, eventData(type, n));
    send(identity, event);
    final[identity] = event.sequenceNumber;
  }
  const seconds = monotonicSeconds() - started;
  return {
    events: count,
    started,
    seconds: Math.round(seconds * 1000) / 1000,
    events_per_second: Math.round((count / seconds) * 10) / 10,
    worst_lag_ms: Math.round(worstLag * 1e5) / 100,
    final,
  };
}

async function main() {
  const send = await connect();
  const lines = readline.createInterface({ input: process.stdin });
  for await (const line of lines) {
    const command = JSON.parse(line);
    let reply;
    try {
      if (command.cmd === "one") {
        const event = envelope(command.identity, command.type, command.data);
        send(command.identity, event);
        reply = { sequence: event.sequenceNumber };
      } else if (command.cmd === "publish") {
        reply = await publishPhase(send, command.ids, command.count, command.rate);
      } else if (command.cmd === "exit") {
        reply = { bye: true };
      } else {
        reply = { error: `unknown command ${command.cmd}` };
      }
    } catch (err) {
      reply = { error: `${err.name}: ${err.message}` };
    }
    process.stdout.write(`${JSON.stringify(reply)}\n`);
    if (command.cmd === "exit") break;
  }
  process.exit(0);
}

main().catch((err) => {
  console.error(err.stack || err);
  process.exit(2);
});
