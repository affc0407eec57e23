"use strict";
// A peer of VORA for `python -m bench --only peers`: a Node cluster of PEER_WORKERS workers on one
// loopback port (the primary hands each connection to a worker in turn, as gunicorn's workers
// share VORA's port), each worker connected to the benchmark's Redis at PEER_REDIS_URL.
//
// PEER_KIND:
//   socketio-streams  Socket.IO 4 with @socket.io/redis-streams-adapter and connection state
//                     recovery (the adapter that lets a client that reconnects get what it missed)
//   socketio-redis    Socket.IO 4 with @socket.io/redis-adapter (Redis pub/sub, nothing kept)
//   ws                a plain `ws` relay: one Redis pub/sub subscription per worker, each message
//                     "IDENTITY PAYLOAD" written to that identity's sockets (the floor of the stack)
//
// A client names its identity in the query (?identity=...) and joins that room: no token, no
// scopes, no per-session cap (docs/BENCHMARKS.md says what each peer guarantees and what not).
// The primary prints "ready KIND PORT" once every worker listens and reads from Redis.

const cluster = require("node:cluster");
const http = require("node:http");
const { createClient } = require("redis");

const KIND = process.env.PEER_KIND;
const PORT = Number(process.env.PEER_PORT);
const REDIS_URL = process.env.PEER_REDIS_URL;
const WORKERS = Number(process.env.PEER_WORKERS || "2");
// Keys and channels of this peer in the shared benchmark Redis.
const PREFIX = process.env.PEER_PREFIX || "bench:peers";
const HOST = "127.0.0.1"; // loopback only
const PING_INTERVAL_MS = 20_000; // VORA_WS_PING_INTERVAL's default, for the ws relay
const MAX_MESSAGE_BYTES = 4096; // VORA_WS_MAX_MESSAGE_BYTES's default
const RECOVERY_MS = 2 * 60 * 1000; // Socket.IO's default maxDisconnectionDuration
const KINDS = ["socketio-streams", "socketio-redis", "ws"];
// Which command a worker's Redis reader shows in CLIENT LIST once it reads.
const READING = { "socketio-streams": ["xread"], "socketio-redis": ["psubscribe", "subscribe"], ws: ["subscribe"] };

function fail(message) {
  console.error(message);
  process.exit(2);
}

if (!KINDS.includes(KIND)) fail(`PEER_KIND must be one of ${KINDS.join(", ")}, not ${KIND}`);
if (!Number.isInteger(PORT) || PORT <= 0) fail(`PEER_PORT must be a port number, not ${process.env.PEER_PORT}`);
if (!REDIS_URL) fail("PEER_REDIS_URL is required (the benchmark's own Redis)");

function identityOf(url) {
  return new URL(url, `http://${HOST}`).searchParams.get("identity") || "";
}

async function redisClient(name) {
  const client = createClient({ url: REDIS_URL, name });
  client.on("error", (err) => console.error(`redis: ${err.message}`));
  await client.connect();
  return client;
}

// Wait until one of this worker's Redis connections reads (an XREAD blocked, a subscription made):
// an event published before that would never reach this worker.
async function untilReading(client, name) {
  const deadline = Date.now() + 15_000;
  for (;;) {
    const list = await client.sendCommand(["CLIENT", "LIST"]);
    const reading = String(list)
      .split("\n")
      .some((line) => line.includes(` name=${name} `) && READING[KIND].some((cmd) => line.includes(` cmd=${cmd} `)));
    if (reading) return;
    if (Date.now() > deadline) throw new Error(`no Redis reader of ${name} within 15 s`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

function notFound(req, res) {
  res.writeHead(404, { "Content-Type": "text/plain" }).end("not found\n");
}

async function socketIoWorker(name) {
  const { Server } = require("socket.io");
  const pub = await redisClient(name);
  const server = http.createServer(notFound);
  // WebSocket only: across cluster workers without sticky sessions long-polling cannot work.
  const options = { transports: ["websocket"], serveClient: false, maxHttpBufferSize: MAX_MESSAGE_BYTES };
  if (KIND === "socketio-streams") {
    options.connectionStateRecovery = { maxDisconnectionDuration: RECOVERY_MS, skipMiddlewares: true };
  }
  const io = new Server(server, options);
  if (KIND === "socketio-streams") {
    const { createAdapter } = require("@socket.io/redis-streams-adapter");
    io.adapter(createAdapter(pub, { streamName: `${PREFIX}:stream`, sessionKeyPrefix: `${PREFIX}:session:` }));
  } else {
    const { createAdapter } = require("@socket.io/redis-adapter");
    const sub = pub.duplicate();
    sub.on("error", (err) => console.error(`redis: ${err.message}`));
    await sub.connect();
    io.adapter(createAdapter(pub, sub, { key: PREFIX }));
  }
  io.on("connection", (socket) => {
    const identity = identityOf(socket.request.url);
    if (identity) socket.join(identity);
  });
  return { server, pub };
}

async function wsWorker(name) {
  const { WebSocketServer } = require("ws");
  const pub = await redisClient(name);
  const sub = pub.duplicate();
  sub.on("error", (err) => console.error(`redis: ${err.message}`));
  await sub.connect();
  const sockets = new Map(); // identity -> Set of sockets
  await sub.subscribe(`${PREFIX}:ws`, (message) => {
    const space = message.indexOf(" ");
    const targets = sockets.get(message.slice(0, space));
    if (!targets) return;
    const frame = Buffer.from(message.slice(space + 1)); // encoded once, written to every socket
    for (const ws of targets) ws.send(frame, { binary: false });
  });
  const server = http.createServer(notFound);
  const wss = new WebSocketServer({ server, perMessageDeflate: false, maxPayload: MAX_MESSAGE_BYTES });
  wss.on("connection", (ws, req) => {
    const identity = identityOf(req.url);
    let targets = sockets.get(identity);
    if (!targets) sockets.set(identity, (targets = new Set()));
    targets.add(ws);
    ws.alive = true;
    ws.on("pong", () => (ws.alive = true));
    ws.on("message", () => {}); // clients have nothing to say here
    ws.on("error", () => {});
    ws.on("close", () => {
      targets.delete(ws);
      if (targets.size === 0 && sockets.get(identity) === targets) sockets.delete(identity);
    });
  });
  // A heartbeat, as every relay needs to notice dead peers: ping each socket, drop the silent ones.
  setInterval(() => {
    for (const ws of wss.clients) {
      if (!ws.alive) {
        ws.terminate();
        continue;
      }
      ws.alive = false;
      ws.ping();
    }
  }, PING_INTERVAL_MS).unref();
  return { server, pub };
}

async function worker() {
  const name = `peer-${KIND}-${process.pid}`;
  const { server, pub } = KIND === "ws" ? await wsWorker(name) : await socketIoWorker(name);
  await new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(PORT, HOST, resolve);
  });
  await untilReading(pub, name);
  process.send("ready");
}

function primary() {
  let ready = 0;
  for (let n = 0; n < WORKERS; n++) {
    cluster.fork().on("message", (message) => {
      if (message === "ready" && ++ready === WORKERS) console.log(`ready ${KIND} ${PORT}`);
    });
  }
  cluster.on("exit", (child, code, signal) => {
    console.error(`worker ${child.process.pid} exited (${signal || code}); stopping`);
    process.exit(1);
  });
}

if (cluster.isPrimary) {
  primary();
} else {
  worker().catch((err) => fail(`worker ${process.pid}: ${err.stack || err}`));
}
