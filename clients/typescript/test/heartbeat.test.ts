import assert from "node:assert/strict";
import { test } from "node:test";
import { FAST_RULES, act, clientFor, instance, newIdentity, next, publishAndReceive } from "./harness.js";

for (const transport of ["websocket", "sse"] as const) {
  test(`a connection on ${transport} that goes silent (instance SIGSTOPped) is declared dead by missed heartbeats and resumed`, async () => {
    const vora = await instance("heartbeat", { VORA_WS_HEARTBEAT_INTERVAL: "1" });
    const identity = newIdentity();
    const client = await clientFor(vora, `heartbeat-user-${transport}`, [identity]);
    const stream = client.stream({ identity, rules: { ...FAST_RULES, connectTimeoutMs: 1_500 }, transport });
    await stream.opened();
    const beat = await next(stream, "heartbeat");
    assert.equal(beat.data.intervalSeconds, 1);
    const before = (await publishAndReceive(stream, vora, identity, "presence", { status: "busy" })).published;

    const reconnecting = next(stream, "reconnecting", 15_000);
    const reopened = next(stream, "open", 45_000); // listening first: it may open before resume answers
    reopened.catch(() => undefined); // awaited below; a failure before then must not go unhandled
    const pausedAt = Date.now();
    await act(vora, "pause");
    try {
      const drop = await reconnecting;
      const silentMs = Date.now() - pausedAt;
      assert.equal(drop.cause, "closed 1006");
      assert.ok(silentMs >= 2_000, `declared dead after ${silentMs} ms, not before two heartbeats were missed`);
    } finally {
      await act(vora, "resume");
    }
    const open = await reopened;
    assert.equal(open.lastEventId, before.eventId);
    await publishAndReceive(stream, vora, identity, "presence", { status: "available" });
    stream.close();
  });
}
