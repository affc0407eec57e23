import assert from "node:assert/strict";
import { test } from "node:test";
import { sseTransport, webSocketTransport } from "../src/index.js";
import type { Transport, TransportConnection, TransportSink, TransportTarget, VoraEvent } from "../src/index.js";
import {
  FAST_RULES,
  act,
  clientFor,
  instance,
  newIdentity,
  next,
  publish,
  publishAndReceive,
  until,
} from "./harness.js";

/**
 * The real transport, recording each open's lastEventId; with before, the first open runs it, then opens and is cut
 * (1006) as soon as it opened, its channelOpened never read: a phone whose radio died as the socket opened.
 */
function dropFirstUnread(
  inner: Transport,
  before: (() => Promise<void>) | undefined,
): Transport & { sent: (string | undefined)[] } {
  const wrapped = {
    name: inner.name,
    connectionType: inner.connectionType,
    available: () => inner.available(),
    sent: [] as (string | undefined)[],
    open(target: TransportTarget, sink: TransportSink): TransportConnection {
      wrapped.sent.push(target.lastEventId);
      if (before === undefined || wrapped.sent.length > 1) return inner.open(target, sink);
      let real: TransportConnection | undefined;
      let closed: [number, string] | undefined;
      void before().then(() => {
        real = inner.open(target, {
          onOpen: () => {
            sink.onOpen();
            real?.close(1000, "cut");
          },
          onMessage: () => undefined,
          onClose: (close) => sink.onClose({ ...close, code: 1006, reason: "" }),
        });
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

const TRANSPORTS: Record<string, () => Transport> = { websocket: webSocketTransport, sse: sseTransport };

for (const transport of ["websocket", "sse"] as const) {
  test(`after its instance is SIGKILLed and restarted the stream on ${transport} resumes with 0 events lost or duplicated`, async () => {
    const edge = await instance(`resume-edge-${transport}`);
    const publisher = await instance("main"); // the telephony side keeps publishing through another instance
    const identity = newIdentity();
    const client = await clientFor(edge, `resume-user-${transport}`, [identity]);
    const stream = client.stream({ identity, rules: FAST_RULES, transport });
    const received: VoraEvent[] = [];
    stream.on("event", (event) => received.push(event));
    await stream.opened();

    const published: string[] = [];
    for (let n = 0; n < 10; n++)
      published.push((await publish(publisher, identity, "callRinging", { callId: `before-${n}` })).eventId);
    await until(() => received.length === 10, "the first 10 events");

    const reconnecting = next(stream, "reconnecting");
    await act(edge, "kill");
    const drop = await reconnecting;
    assert.equal(drop.setup, false, "a drop resumes the same session");
    assert.equal(drop.cause, "closed 1006", "a cut connection is 1006 on either transport");
    assert.equal(drop.transport, transport);
    for (let n = 0; n < 20; n++)
      published.push((await publish(publisher, identity, "callHeld", { callId: `during-${n}` })).eventId);
    const reopened = next(stream, "open", 30_000); // listening first: it may open before restart answers
    await act(edge, "restart");
    await reopened;
    for (let n = 0; n < 10; n++)
      published.push((await publish(publisher, identity, "callEnded", { callId: `after-${n}` })).eventId);
    await until(() => received.length >= published.length, "every event after the restart");

    assert.deepEqual(
      received.map((event) => event.eventId),
      published,
      "in order, each once",
    );
    const sequence = received.map((event) => event.sequenceNumber);
    assert.deepEqual(
      sequence,
      sequence.map((_, index) => (sequence[0] ?? 0) + index),
      "no gaps in sequenceNumber",
    );
    stream.close();
  });
}

for (const transport of ["websocket", "sse"] as const) {
  test(`a stream on ${transport} cut before its first event resumes from where its connection opened, with 0 events lost`, async () => {
    const edge = await instance(`opened-edge-${transport}`);
    const publisher = await instance("main");
    const identity = newIdentity();
    const client = await clientFor(edge, `opened-user-${transport}`, [identity]);
    const saved: string[] = [];
    const stream = client.stream({
      identity,
      rules: FAST_RULES,
      transport,
      lastEventIdStore: { load: () => undefined, save: (id) => void saved.push(id) },
    });
    const received: VoraEvent[] = [];
    const gaps: unknown[] = [];
    stream.on("event", (event) => received.push(event));
    stream.on("resumeGap", (gap) => gaps.push(gap));
    await stream.opened();
    await until(() => saved.length === 1, "the position the connection's channelOpened names");
    const start = saved[0];
    assert.equal(stream.lastEventId, start);

    const reconnecting = next(stream, "reconnecting");
    await act(edge, "kill");
    await reconnecting;
    // Published while no instance serves the stream: a reconnect without lastEventId would start after all of them.
    const missed: string[] = [];
    for (let n = 0; n < 3; n++)
      missed.push((await publish(publisher, identity, "callRinging", { callId: `missed-${n}` })).eventId);
    const reopened = next(stream, "open", 30_000);
    await act(edge, "restart");
    await reopened;
    const after = (await publish(publisher, identity, "callEnded", { callId: "missed-0" })).eventId;
    await until(() => received.length >= 4, "the missed events and the next one");

    assert.deepEqual(
      received.map((event) => event.eventId),
      [...missed, after],
      "in order, each once",
    );
    assert.deepEqual(saved, [start, ...missed, after], "the opening position saved, then each event's");
    assert.deepEqual(gaps, [], "no resumeGap");
    stream.close();
  });
}

test("a stream started with a persisted lastEventId receives what it missed, and saves each new position", async () => {
  const vora = await instance("main");
  const identity = newIdentity();
  const client = await clientFor(vora, "persist-user", [identity]);
  const saved: string[] = [];
  const first = client.stream({
    identity,
    rules: FAST_RULES,
    lastEventIdStore: { load: () => undefined, save: (id) => void saved.push(id) },
  });
  await first.opened();
  const seen = (await publishAndReceive(first, vora, identity, "presence", { status: "away" })).published;
  first.close();
  assert.deepEqual(
    saved,
    ["0-0", seen.eventId],
    "where the connection opened (an identity with no event yet), then the event",
  );

  const missed = [
    await publish(vora, identity, "presence", { status: "busy" }),
    await publish(vora, identity, "presence", { status: "available" }),
  ];
  const second = client.stream({
    identity,
    rules: FAST_RULES,
    lastEventIdStore: { load: async () => saved.at(-1), save: (id) => void saved.push(id) },
  });
  const received: string[] = [];
  second.on("event", (event) => received.push(event.eventId));
  await until(() => received.length === 2, "the two missed events");
  assert.deepEqual(
    received,
    missed.map((event) => event.eventId),
  );
  assert.deepEqual(saved.slice(2), received, "resumed from the saved position: it opens there, nothing new to save");
  second.close();
});

for (const transport of ["websocket", "sse"] as const) {
  test(`a stream on ${transport} opens its session's first connection with setup's lastEventId: one cut before its channelOpened loses nothing`, async () => {
    const vora = await instance("main");
    const identity = newIdentity();
    const client = await clientFor(vora, `setup-position-${transport}`, [identity]);
    const before = (await publish(vora, identity, "presence", { status: "away" })).eventId;
    const ringing: string[] = [];
    const dropping = dropFirstUnread(TRANSPORTS[transport]!(), async () => {
      ringing.push((await publish(vora, identity, "callRinging", { callId: "ringing" })).eventId);
    });
    const stream = client.stream({ identity, rules: FAST_RULES, transport: [dropping] });
    const received: string[] = [];
    stream.on("event", (event) => received.push(event.eventId));
    await until(() => received.length === 1, "the event published before the first connection was cut");
    const after = (await publish(vora, identity, "callEnded", { callId: "ringing" })).eventId;
    await until(() => received.length === 2, "the event published after");
    assert.deepEqual(dropping.sent, [before, before], "setup's position (the event before setup), twice");
    assert.deepEqual(received, [...ringing, after], "in order, each once");
    stream.close();
  });
}

test("a stream given a lastEventId opens with it, not with setup's later position", async () => {
  const vora = await instance("main");
  const identity = newIdentity();
  const client = await clientFor(vora, "own-position-user", [identity]);
  const own = (await publish(vora, identity, "presence", { status: "away" })).eventId;
  const missed = (await publish(vora, identity, "presence", { status: "busy" })).eventId;
  const recording = dropFirstUnread(webSocketTransport(), undefined);
  const stream = client.stream({ identity, rules: FAST_RULES, transport: [recording], lastEventId: own });
  const received: string[] = [];
  stream.on("event", (event) => received.push(event.eventId));
  await until(() => received.length === 1, "the event after the stream's own position");
  assert.deepEqual(recording.sent, [own]);
  assert.deepEqual(received, [missed]);
  stream.close();
});
