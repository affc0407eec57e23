import assert from "node:assert/strict";
import { test } from "node:test";
import { sseTransport, webSocketTransport } from "../src/index.js";
import type {
  Transport,
  TransportConnection,
  TransportSink,
  TransportTarget,
  VoraClient,
  VoraStream,
} from "../src/index.js";
import {
  FAST_RULES,
  clientFor,
  instance,
  newIdentity,
  next,
  proxy,
  publishAndReceive,
  until,
  wsPackage,
} from "./harness.js";

/** Count a stream's setups (the one at start included). */
function countSetups(stream: VoraStream): { count: number } {
  const counter = { count: 0 };
  stream.on("setup", () => (counter.count += 1));
  return counter;
}

// Transports whose refused handshake shows its status (a browser's WebSocket hides it: there the guard counts notices).
const VISIBLE: Record<string, () => Transport> = { websocket: wsPackage, sse: sseTransport };

/** The real transport, with another device setting up a session on the user just before the chosen opens. */
function setUpBeforeOpens(
  inner: Transport,
  otherDevice: VoraClient,
  identity: string,
  before: Set<number>,
): Transport & { opens: number } {
  const wrapped = {
    name: inner.name,
    connectionType: inner.connectionType,
    available: () => inner.available(),
    opens: 0,
    open(target: TransportTarget, sink: TransportSink): TransportConnection {
      wrapped.opens += 1;
      if (!before.has(wrapped.opens)) return inner.open(target, sink);
      let real: TransportConnection | undefined;
      let closed: [number, string] | undefined;
      // The stream's session, not open yet, is the oldest: the other device's setup ends it.
      void otherDevice.setup({ identity }).then(() => {
        real = inner.open(target, sink);
        if (closed !== undefined) real.close(...closed);
      });
      return {
        close: (code: number, reason: string) => {
          closed = [code, reason];
          real?.close(code, reason);
        },
      };
    },
  };
  return wrapped;
}

for (const transport of ["websocket", "sse"] as const) {
  test(`two copies of an app past a one-session limit evict each other once each, then one closes with replaced (${transport})`, async () => {
    const vora = await instance("one-session", { VORA_MAX_SESSIONS_PER_IDENTITY: "1" });
    const identity = newIdentity();
    const options = { identity, rules: FAST_RULES, transport: [VISIBLE[transport]!()] };
    const first = (await clientFor(vora, `tabs-user-${transport}`, [identity])).stream(options);
    const firstSetups = countSetups(first);
    await first.opened();
    const second = (await clientFor(vora, `tabs-user-${transport}`, [identity])).stream(options);
    const secondSetups = countSetups(second);
    const streams = [first, second];
    await until(() => streams.some((stream) => stream.state === "closed"), "one of the two to give up");
    const [loser] = streams.filter((stream) => stream.state === "closed");
    const [winner] = streams.filter((stream) => stream.state !== "closed");
    assert.ok(loser !== undefined && winner !== undefined);
    assert.equal(loser.closeInfo?.reason, "replaced");
    await winner.opened();
    // Two setups to start, then one after replaced for each (maxReplacedSetups 1): four in all, and no more. An
    // eviction that lands before the evicted stream opened shows as a 401, and counts as a replaced all the same.
    assert.equal(firstSetups.count + secondSetups.count, 4);
    await publishAndReceive(winner, vora, identity, "presence", { status: "busy" });
    assert.equal(winner.state, "open");
    assert.equal(firstSetups.count + secondSetups.count, 4, "the survivor holds its session");
    winner.close();
  });
}

test("a single replacement sets up again; a second within replacedWindowMs closes; maxReplacedSetups raises the allowance", async () => {
  const vora = await instance("one-session", { VORA_MAX_SESSIONS_PER_IDENTITY: "1" });
  const identity = newIdentity();
  const client = await clientFor(vora, "replaced-once-user", [identity]);
  const stream = client.stream({ identity, rules: FAST_RULES });
  await stream.opened();
  const reopened = next(stream, "open");
  await client.setup({ identity }); // another device, once: the stream's session is the oldest
  await reopened;
  await publishAndReceive(stream, vora, identity, "presence", { status: "away" });
  const closed = next(stream, "closed");
  await client.setup({ identity }); // again within the window: a carousel, as far as the SDK can tell
  assert.equal((await closed).reason, "replaced");

  const patient = client.stream({ identity, rules: FAST_RULES, maxReplacedSetups: 2 });
  await patient.opened();
  for (let n = 0; n < 2; n++) {
    const again = next(patient, "open");
    await client.setup({ identity });
    await again;
  }
  assert.equal(patient.state, "open");
  patient.close();
});

for (const transport of ["websocket", "sse"] as const) {
  for (const evictedAtStart of [true, false]) {
    const shape = evictedAtStart ? "both before it opened" : "a notice, then one before it opened";
    test(`a session ended before its stream opened counts as replaced: ${shape} (${transport})`, async () => {
      const vora = await instance("one-session", { VORA_MAX_SESSIONS_PER_IDENTITY: "1" });
      const identity = newIdentity();
      const client = await clientFor(vora, `before-open-user-${transport}`, [identity]);
      const otherDevice = await clientFor(vora, `before-open-user-${transport}`, [identity]);
      const wrapped = setUpBeforeOpens(
        VISIBLE[transport]!(),
        otherDevice,
        identity,
        new Set(evictedAtStart ? [1, 2] : [2]),
      );
      const stream = client.stream({ identity, rules: FAST_RULES, transport: [wrapped] });
      const causes: string[] = [];
      stream.on("reconnecting", (info) => causes.push(info.cause));
      if (!evictedAtStart) {
        await stream.opened();
        await otherDevice.setup({ identity }); // the replaced notice: the one setup the guard allows
      }
      // Without the count, the stream sets up again and opens a third time (the carousel goes on).
      await until(() => stream.state === "closed" || wrapped.opens >= 3, "the stream to close or open again");
      assert.equal(stream.state, "closed");
      assert.equal(stream.closeInfo?.reason, "replaced");
      assert.equal(wrapped.opens, 2);
      assert.deepEqual(causes, [evictedAtStart ? "refused 401" : "replaced"]);
    });
  }
}

test("a session ended before its stream opened counts as replaced on the SSE probe too, behind a proxy that blocks WebSocket", async () => {
  const vora = await instance("one-session", { VORA_MAX_SESSIONS_PER_IDENTITY: "1" });
  const front = await proxy("refuse-one-session", [vora], "refuse");
  const identity = newIdentity();
  const client = await clientFor(front, "probe-evicted-user", [identity]);
  const otherDevice = await clientFor(vora, "probe-evicted-user", [identity]);
  // The platform's WebSocket hides the proxy's refusal, so each setup's upgrades fail unexplained and the stream
  // probes SSE; another device's setup lands just before each probe, which VORA refuses with 401.
  const probes = setUpBeforeOpens(sseTransport(), otherDevice, identity, new Set([1, 2]));
  const stream = client.stream({ identity, rules: FAST_RULES, transport: [webSocketTransport(), probes] });
  const setups = countSetups(stream);
  // Without the count, the stream sets up a third time and its third probe opens (the carousel goes on).
  await until(() => stream.state === "closed" || probes.opens >= 3, "the stream to close or probe again");
  assert.equal(stream.state, "closed");
  assert.equal(stream.closeInfo?.reason, "replaced");
  assert.equal(probes.opens, 2);
  assert.equal(setups.count, 2);
});
