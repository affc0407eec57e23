import assert from "node:assert/strict";
import { once } from "node:events";
import type { Socket } from "node:net";
import { test } from "node:test";
import WebSocket from "ws";
import {
  afterDrop,
  afterRefusal,
  afterTermination,
  DEFAULT_RULES,
  compareEventIds,
  isEventId,
  socketUrl,
  sseTransport,
  webSocketTransport,
} from "../src/index.js";
import type { FallbackInfo, StreamEvents, Transport, WebSocketConstructor } from "../src/index.js";
import { FAST_RULES, clientFor, closedPort, instance, newIdentity, next, publishAndReceive } from "./harness.js";

test("an injected WebSocket constructor (the ws package, as on Node 20 without flags) carries the stream", async () => {
  const vora = await instance("main");
  const identity = newIdentity();
  const client = await clientFor(vora, "ws-package-user", [identity]);
  const stream = client.stream({
    identity,
    rules: FAST_RULES,
    transport: [webSocketTransport({ WebSocket: WebSocket as unknown as WebSocketConstructor })],
  });
  await stream.opened();
  await publishAndReceive(stream, vora, identity, "callAnswered", { callId: "c-9" });
  stream.close();
});

test("a handshake refused with a status is seen through the ws package: 400 stops the stream and its connection closes", async () => {
  const vora = await instance("main");
  const identity = newIdentity();
  const client = await clientFor(vora, "handshake-user", [identity]);
  // The refused handshakes' connections, from ws's own event (a listener added before the SDK's).
  const refusedSockets: Socket[] = [];
  class Tracked extends WebSocket {
    constructor(address: string) {
      super(address);
      this.on("unexpected-response", (_request, response) => {
        if (response.socket !== null) refusedSockets.push(response.socket);
      });
    }
  }
  // A query parameter VORA does not know is refused with 400 before the upgrade.
  const url = `${socketUrl(vora.baseUrl)}?debug=1`;
  const stream = client.stream({
    identity,
    rules: FAST_RULES,
    transport: [webSocketTransport({ WebSocket: Tracked as unknown as WebSocketConstructor, url })],
  });
  const closed = await stream.closed;
  assert.equal(closed.reason, "error");
  assert.match(closed.detail, /HTTP 400/);
  assert.match(closed.detail, /Unknown query parameter/);
  // VORA keeps an idle connection for 75 s: left open, it would hold a slot there and keep this process alive.
  assert.equal(refusedSockets.length, 1);
  for (const socket of refusedSockets) {
    if (socket.destroyed) continue;
    await once(socket, "close", { signal: AbortSignal.timeout(5_000) }).catch(() => {
      assert.fail("the refused handshake's connection was still open 5 s after the stream closed");
    });
  }
});

test("isEventId takes what VORA accepts as lastEventId: two parts of at most 20 digits, each at most 2^64-1", () => {
  assert.ok(isEventId("18446744073709551615-18446744073709551615"));
  assert.ok(isEventId("0-0"));
  assert.ok(!isEventId("18446744073709551616-0"), "a part over 2^64-1");
  assert.ok(!isEventId("1-99999999999999999999"), "a part over 2^64-1");
  assert.ok(!isEventId("1795396666123"));
  assert.ok(!isEventId("1-0 "));
});

// The two ways to open a stream whose every attempt the server could answer: "auto" (with ws, which shows the 400) and SSE.
const REFUSED_POSITION_TRANSPORTS: [string, () => Transport[]][] = [
  [
    "auto (ws package, then SSE)",
    () => [webSocketTransport({ WebSocket: WebSocket as unknown as WebSocketConstructor }), sseTransport()],
  ],
  ["sse", () => [sseTransport()]],
];

for (const [name, transports] of REFUSED_POSITION_TRANSPORTS) {
  test(`${name}: a lastEventId VORA would refuse (400) is dropped with a local resumeGap, and the stream opens live at once`, async () => {
    const vora = await instance("main");
    const identity = newIdentity();
    const client = await clientFor(vora, "refused-position-user", [identity]);
    const refused = "18446744073709551616-0"; // each part is at most 2^64-1: VORA answers 400 to it
    const stream = client.stream({ identity, rules: FAST_RULES, lastEventId: refused, transport: transports() });
    const gaps: StreamEvents["resumeGap"][] = [];
    const reconnects: StreamEvents["reconnecting"][] = [];
    const fallbacks: FallbackInfo[] = [];
    stream.on("resumeGap", (gap) => gaps.push(gap));
    stream.on("reconnecting", (info) => reconnects.push(info));
    stream.on("fallback", (info) => fallbacks.push(info));
    await stream.opened();
    assert.equal(gaps.length, 1, "the app is told that what came after its position may be missing");
    assert.deepEqual(gaps[0]?.data, {
      reason: "invalidLastEventId",
      requestedEventId: refused,
      oldestEventId: null,
      local: true,
    });
    assert.deepEqual(reconnects, [], "no attempt was refused: the position was never sent");
    assert.deepEqual(fallbacks, []);
    assert.equal(stream.transport, transports()[0]?.name);
    const { published } = await publishAndReceive(stream, vora, identity, "callAnswered", { callId: "c-live" });
    assert.equal(stream.lastEventId, published.eventId);
    stream.close();
  });
}

test("a list of transports: one failed open backs off, the second probes the next, which opens, and stays there", async () => {
  const vora = await instance("main");
  const identity = newIdentity();
  const client = await clientFor(vora, "fallback-user", [identity]);
  const blocked = webSocketTransport({ url: `ws://127.0.0.1:${await closedPort()}/vora/ws` });
  const stream = client.stream({
    identity,
    rules: FAST_RULES,
    fallbackAfter: 2,
    transport: [blocked, webSocketTransport()],
  });
  const failures: string[] = [];
  const fallbacks: FallbackInfo[] = [];
  stream.on("reconnecting", (info) => failures.push(info.cause));
  stream.on("fallback", (info) => fallbacks.push(info));
  await stream.opened();
  assert.equal(
    failures.length,
    1,
    "the first failed open is retried after a wait; the second probed the next at once, and the first, tried again right after, failed again",
  );
  assert.deepEqual(fallbacks, [{ from: "websocket", to: "websocket", failures: 3 }]);
  await publishAndReceive(stream, vora, identity, "presence", { status: "away" });
  stream.close();
});

test("the reconnect rules follow the README per close code, Retry-After and reason", () => {
  const rules = { ...DEFAULT_RULES, random: () => 0.999 };
  const step = (s: ReturnType<typeof afterDrop>) => (s.kind === "resume" ? s : assert.fail("expected resume"));
  assert.ok(step(afterDrop(rules, 1006, 0)).delayMs > 19_000, "1006: up to 20 s");
  assert.ok(step(afterDrop(rules, 1011, 0)).delayMs > 19_000, "1011: up to 20 s");
  assert.ok(step(afterDrop(rules, 1006, 0, 2_000)).delayMs < 2_000, "1006 after the server announced 2 s: up to 2 s");
  assert.ok(step(afterDrop(rules, 4008, 0, 5_000)).delayMs < 1_000, "4008: up to 1 s whatever the announced window");
  assert.ok(step(afterDrop(rules, 1008, 0)).delayMs < 1_000, "1008: up to 1 s");
  assert.ok(step(afterDrop(rules, 4008, 0)).delayMs < 1_000, "4008: up to 1 s");
  assert.equal(step(afterDrop(rules, 1000, 0)).setup, true, "1000 without channelTerminated: set up again");
  assert.equal(step(afterDrop(rules, 4401, 0)).setup, true, "4401: set up again");
  assert.ok(
    step(afterDrop(rules, 1000, 0, 5_000)).delayMs < 1_000,
    "1000: set up again after up to 1 s, as after replaced",
  );
  assert.ok(step(afterDrop(rules, 4401, 0)).delayMs < 1_000, "4401: set up again after up to 1 s");
  const refused = step(afterRefusal(rules, 503, 7, 3));
  assert.ok(refused.delayMs >= 7_000 && refused.delayMs < 15_000, "Retry-After, then up to 2**3 s");
  assert.ok(step(afterRefusal(rules, undefined, undefined, 10)).delayMs < 30_000, "capped at 30 s");
  assert.equal(step(afterRefusal(rules, 401, undefined, 1)).setup, true, "401: set up again");
  assert.equal(afterRefusal(rules, 403, undefined, 1).kind, "stop");
  assert.equal(afterTermination(rules, "logout").kind, "stop");
  assert.equal(afterTermination(rules, "revoked").kind, "stop");
  for (const reason of ["replaced", "tokenExpired", "disconnected"] as const)
    assert.equal(step(afterTermination(rules, reason)).setup, true, reason);
  assert.equal(step(afterTermination(rules, "maintenance")).setup, false);
  assert.ok(
    step(afterTermination(rules, "maintenance")).delayMs > 19_000,
    "maintenance: up to 20 s when none was announced",
  );
  assert.ok(
    step(afterTermination(rules, "maintenance", 2_000)).delayMs < 2_000,
    "maintenance: up to the announced window",
  );
  assert.ok(compareEventIds("1795396666123-10", "1795396666123-9") > 0, "eventIds compare numerically");
  assert.equal(socketUrl("https://vora.example/vora/"), "wss://vora.example/vora/ws");
});

test("a handshake refused with 429 (the session's socket cap) backs off and opens once a socket is free", async () => {
  const vora = await instance("one-socket", { VORA_WS_MAX_SOCKETS_PER_SESSION: "1" });
  const identity = newIdentity();
  const client = await clientFor(vora, "cap-user", [identity]);
  const webSocketToken = await client.setup({ identity });
  const transport = [webSocketTransport({ WebSocket: WebSocket as unknown as WebSocketConstructor })];
  const holder = client.stream({ identity, webSocketToken, rules: FAST_RULES, transport });
  await holder.opened();
  const waiting = client.stream({ identity, webSocketToken, rules: FAST_RULES, transport });
  const refused = await next(waiting, "reconnecting");
  assert.equal(refused.cause, "refused 429");
  assert.equal(refused.setup, false, "a full session is not a dead one");
  holder.close();
  await waiting.opened();
  await publishAndReceive(waiting, vora, identity, "presence", { status: "busy" });
});
