import assert from "node:assert/strict";
import { test } from "node:test";
import { VoraUnauthorizedError, sseTransport, webSocketTransport } from "../src/index.js";
import type {
  FallbackInfo,
  StateChange,
  Transport,
  TransportClose,
  TransportConnection,
  TransportSink,
  TransportTarget,
} from "../src/index.js";
import type { Instance } from "./harness.js";
import {
  FAST_RULES,
  act,
  clientFor,
  instance,
  newIdentity,
  next,
  proxy,
  publish,
  publishAndReceive,
  serverApi,
  until,
  wsPackage,
} from "./harness.js";

interface Recorded {
  opened: boolean;
  messages: { type: string; eventId?: string; data: Record<string, unknown> }[];
  closed: Promise<TransportClose>;
}

/** Open the SSE transport alone and record what it reports. */
function openSse(baseUrl: string, token: string, lastEventId?: string): Recorded {
  let resolveClosed!: (close: TransportClose) => void;
  const recorded: Recorded = {
    opened: false,
    messages: [],
    closed: new Promise((resolve) => (resolveClosed = resolve)),
  };
  const sink: TransportSink = {
    onOpen: () => (recorded.opened = true),
    onMessage: (text) => recorded.messages.push(JSON.parse(text) as Recorded["messages"][number]),
    onClose: resolveClosed,
  };
  sseTransport().open({ baseUrl, token, lastEventId }, sink);
  return recorded;
}

test("the SSE transport: Last-Event-ID resumes after it, and VORA's closing comment gives the socket's close code", async () => {
  const vora = await instance("main");
  const identity = newIdentity();
  const client = await clientFor(vora, "sse-transport-user", [identity]);
  const token = await client.setup({ identity, connectionType: "ServerSentEvents" });
  const first = await publish(vora, identity, "presence", { status: "away" });
  const second = await publish(vora, identity, "presence", { status: "busy" });
  const stream = openSse(vora.baseUrl, token, first.eventId);
  await until(() => stream.messages.some((m) => m.eventId === second.eventId), "the event after Last-Event-ID");
  assert.equal(stream.opened, true);
  assert.ok(!stream.messages.some((m) => m.eventId === first.eventId), "nothing at or before Last-Event-ID");

  const answer = await serverApi(vora, "DELETE", `/identities/${identity}/sessions?reason=revoked`);
  assert.equal(answer.status, 200, await answer.text());
  const close = await stream.closed;
  assert.equal(close.opened, true);
  assert.equal(close.code, 1000, "the WebSocket closes a revoked session with 1000");
  assert.equal(stream.messages.at(-1)?.type, "channelTerminated");
  assert.equal(stream.messages.at(-1)?.data["reason"], "revoked");
});

test("the SSE transport shows a refusal's status, Retry-After and VORA's error shape", async () => {
  const vora = await instance("main");
  const refused = openSse(vora.baseUrl, "not-a-session-token");
  const close = await refused.closed;
  assert.equal(close.opened, false);
  assert.equal(close.handshake?.status, 401);
  assert.equal(close.handshake?.fromVora, true, "VORA's error shape: VORA itself refused");
  assert.ok(close.handshake?.error instanceof VoraUnauthorizedError);
  assert.deepEqual(Object.keys(close.handshake.error.body).sort(), ["error", "message", "status", "timestamp"]);
});

/** Open an "auto" (or listed) stream through a proxy and resolve once it is open, with what it went through. */
async function throughProxy(
  front: Instance,
  vora: Instance,
  user: string,
  transport: "auto" | "websocket" | "sse" | ReturnType<typeof sseTransport>[],
): Promise<{
  identity: string;
  stream: ReturnType<Awaited<ReturnType<typeof clientFor>>["stream"]>;
  fallbacks: FallbackInfo[];
  states: StateChange[];
}> {
  const identity = newIdentity();
  const client = await clientFor(front, user, [identity]);
  const stream = client.stream({ identity, rules: FAST_RULES, transport });
  const fallbacks: FallbackInfo[] = [];
  const states: StateChange[] = [];
  stream.on("fallback", (info) => fallbacks.push(info));
  stream.on("state", (change) => states.push(change));
  await stream.opened();
  await publishAndReceive(stream, vora, identity, "callRinging", { callId: "through-proxy", direction: "inbound" });
  return { identity, stream, fallbacks, states };
}

test("WebSocket blocked: behind nginx refusing /vora/ws, auto ends on SSE, receives events, and stays on SSE", async () => {
  const vora = await instance("main");
  const front = await proxy("refuse", [vora], "refuse");
  const { identity, stream, fallbacks, states } = await throughProxy(front, vora, "blocked-user", "auto");
  assert.deepEqual(fallbacks, [{ from: "websocket", to: "sse", failures: 3 }]);
  assert.equal(stream.transport, "sse");
  // One failed upgrade may be noise: a wait, the WebSocket again, and only then the SSE probe, which opened.
  assert.deepEqual(
    states.map((change) => `${change.to} ${change.transport}`),
    ["reconnecting websocket", "open sse"],
  );
  assert.deepEqual(states.at(-1), { from: "reconnecting", to: "open", cause: "sse open", transport: "sse" });

  // Set up again after a server-side disconnect: still on SSE, no new attempt on the blocked socket.
  const reopened = next(stream, "open", 30_000);
  const answer = await serverApi(vora, "DELETE", `/identities/${identity}/sessions?reason=disconnected`);
  assert.equal(answer.status, 200, await answer.text());
  assert.equal((await reopened).transport, "sse");
  await publishAndReceive(stream, vora, identity, "presence", { status: "available" });
  assert.equal(fallbacks.length, 1);
  stream.close();
});

test("WebSocket blocked where the refusal is visible: the proxy's own 403 page (not VORA's error shape) falls back", async () => {
  const vora = await instance("main");
  const front = await proxy("refuse", [vora], "refuse");
  const { stream, fallbacks } = await throughProxy(front, vora, "blocked-visible-user", [wsPackage(), sseTransport()]);
  assert.deepEqual(fallbacks, [{ from: "websocket", to: "sse", failures: 3 }]);
  stream.close();
});

test("WebSocket upgrade stripped by the proxy: VORA's 400 for a plain GET on /vora/ws falls back to SSE", async () => {
  const vora = await instance("main");
  const front = await proxy("strip", [vora], "strip");
  const { stream, fallbacks } = await throughProxy(front, vora, "stripped-user", [wsPackage(), sseTransport()]);
  assert.deepEqual(fallbacks, [{ from: "websocket", to: "sse", failures: 3 }]);
  stream.close();
});

/** The SSE transport, whose opens wait while held: VORA then comes back between a failed upgrade and the probe. */
function heldSse(): { transport: Transport; hold(): void; release(): void; waiting(): number } {
  const inner = sseTransport();
  let gate: Promise<void> | undefined;
  let open = () => {};
  let waiting = 0;
  const transport: Transport = {
    name: inner.name,
    connectionType: inner.connectionType,
    available: () => inner.available(),
    open(target: TransportTarget, sink: TransportSink): TransportConnection {
      if (gate === undefined) return inner.open(target, sink);
      waiting += 1;
      let connection: TransportConnection | undefined;
      let closed = false;
      void gate.then(() => {
        if (!closed) connection = inner.open(target, sink);
      });
      return {
        close(code: number, reason: string) {
          if (connection !== undefined) return connection.close(code, reason);
          if (!closed) sink.onClose({ opened: false, code: 1006, reason, handshake: undefined });
          closed = true;
        },
      };
    },
  };
  return {
    transport,
    hold: () => (gate = new Promise((resolve) => (open = resolve))),
    release: () => {
      gate = undefined;
      open();
    },
    waiting: () => waiting,
  };
}

test("a server that is down behind nginx is no reason to fall back: not when it is back by the SSE probe, nor while it is down", async () => {
  const vora = await instance("goes-down");
  const front = await proxy("goes-down", [vora], "pass");
  const identity = newIdentity();
  const client = await clientFor(front, "server-down-user", [identity]);
  const sse = heldSse();
  // The global WebSocket, as in a browser: nginx's 502 and a blocked upgrade look alike (no status).
  // The connect timeout outlasts a restart, so a held probe is not abandoned.
  const stream = client.stream({
    identity,
    rules: { ...FAST_RULES, connectTimeoutMs: 60_000 },
    transport: [webSocketTransport(), sse.transport],
  });
  const fallbacks: FallbackInfo[] = [];
  stream.on("fallback", (info) => fallbacks.push(info));
  let probes = 0;
  stream.on("error", (error) => {
    if (error instanceof Error && /probe failed too/.test(error.message)) probes += 1;
  });
  await stream.opened();
  assert.equal(stream.transport, "websocket");

  // The race: two upgrades get nginx's 502 while VORA is down, and VORA is back by the SSE probe after them.
  sse.hold();
  await act(vora, "kill");
  await until(() => sse.waiting() >= 1, "the SSE probe, after two upgrades that could not pass");
  let reopened = next(stream, "open", 60_000);
  await act(vora, "restart");
  sse.release();
  // The probe opens, and the WebSocket tried right after it passes: VORA had been away, the path never blocked it.
  assert.equal((await reopened).transport, "websocket");
  await publishAndReceive(stream, vora, identity, "presence", { status: "busy" });
  assert.deepEqual(fallbacks, []);

  // Down for longer: nginx answers 502 to the upgrade and to the SSE probe alike, twice, and nothing moves.
  await act(vora, "kill");
  await until(() => probes >= 2, "two SSE probes, each after two upgrades that could not pass");
  assert.deepEqual(fallbacks, []);
  assert.equal(stream.transport, "websocket");
  reopened = next(stream, "open", 30_000);
  await act(vora, "restart");
  assert.equal((await reopened).transport, "websocket");
  await publishAndReceive(stream, vora, identity, "presence", { status: "available" });
  assert.deepEqual(fallbacks, []);
  stream.close();
});

test("VORA's own refusal in its error shape (429: the session's socket cap) is no reason to fall back", async () => {
  const vora = await instance("one-socket", { VORA_WS_MAX_SOCKETS_PER_SESSION: "1" });
  const identity = newIdentity();
  const client = await clientFor(vora, "no-fallback-user", [identity]);
  const webSocketToken = await client.setup({ identity });
  const holder = client.stream({ identity, webSocketToken, rules: FAST_RULES, transport: [wsPackage()] });
  await holder.opened();
  const waiting = client.stream({
    identity,
    webSocketToken,
    rules: FAST_RULES,
    fallbackAfter: 1,
    transport: [wsPackage(), sseTransport()],
  });
  const fallbacks: FallbackInfo[] = [];
  waiting.on("fallback", (info) => fallbacks.push(info));
  const refusals: string[] = [];
  waiting.on("reconnecting", (info) => refusals.push(`${info.cause} ${info.transport}`));
  await until(() => refusals.length >= 2, "two refusals");
  assert.deepEqual(refusals.slice(0, 2), ["refused 429 websocket", "refused 429 websocket"]);
  holder.close();
  await waiting.opened();
  assert.equal(waiting.transport, "websocket");
  assert.deepEqual(fallbacks, []);
  waiting.close();
});

test("transport 'sse' forces Server-Sent Events, and the session declares connectionType ServerSentEvents", async () => {
  const vora = await instance("main");
  const identity = newIdentity();
  const client = await clientFor(vora, "forced-sse-user", [identity]);
  const stream = client.stream({ identity, rules: FAST_RULES, transport: "sse" });
  const opened = next(stream, "open");
  await stream.opened();
  assert.equal((await opened).transport, "sse");
  const sessions = await serverApi(vora, "GET", `/identities/${identity}/sessions`);
  const listed = JSON.stringify(await sessions.json());
  assert.match(listed, /ServerSentEvents/, listed);
  stream.close();
});
