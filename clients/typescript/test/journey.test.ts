import assert from "node:assert/strict";
import { test } from "node:test";
import { VoraClient, VoraForbiddenError, VoraUnauthorizedError } from "../src/index.js";
import type { StateChange, StreamItem } from "../src/index.js";
import { FAST_RULES, clientFor, instance, newIdentity, next, publish, publishAndReceive } from "./harness.js";

for (const transport of ["websocket", "sse"] as const) {
  test(`the client journey on ${transport}: identities, setup, subscription, events in order by iterator and callbacks, logout`, async () => {
    const vora = await instance("main");
    const identity = newIdentity();
    const client = await clientFor(vora, `journey-user-${transport}`, [identity]);
    assert.deepEqual(await client.identities(), [identity]);

    const stream = client.stream({
      identity,
      subscription: { subscribeAll: false, events: ["callRinging", "presence"] },
      rules: FAST_RULES,
      transport,
    });
    const states: StateChange[] = [];
    stream.on("state", (change) => states.push(change));
    const byCallback: string[] = [];
    stream.on("event", (event) => byCallback.push(event.eventId));
    const iterated: StreamItem[] = [];
    const iterating = (async () => {
      for await (const item of stream) iterated.push(item);
    })();
    await stream.opened();

    const ringing = await publish(vora, identity, "callRinging", {
      callId: "c-1",
      direction: "inbound",
      from: "+34602128708",
    });
    await publish(vora, identity, "callHeld", { callId: "c-1" }); // not subscribed: never delivered
    const { published: presence, received: last } = await publishAndReceive(stream, vora, identity, "presence", {
      status: "busy",
    });
    assert.equal(last.type, "presence");
    if (last.type === "presence") assert.equal(last.data.status, "busy");
    assert.deepEqual(byCallback, [ringing.eventId, presence.eventId]);
    assert.equal(stream.lastEventId, presence.eventId);

    const closed = next(stream, "closed");
    await client.logout(identity);
    assert.equal((await closed).reason, "logout");
    await iterating;
    assert.deepEqual(
      iterated.map((item) => item.eventId),
      [ringing.eventId, presence.eventId],
    );
    assert.deepEqual(
      states.map((change) => [change.to, change.transport]),
      [
        ["open", transport],
        ["closed", transport],
      ],
    );
  });
}

test("REST errors are typed exceptions carrying VORA's error shape", async () => {
  const vora = await instance("main");
  const identity = newIdentity();
  const client = await clientFor(vora, "error-user", [identity]);
  await assert.rejects(client.setup({ identity: newIdentity() }), (error: unknown) => {
    assert.ok(error instanceof VoraForbiddenError || (error as { status?: number }).status === 404, String(error));
    const body = (error as VoraForbiddenError).body;
    assert.deepEqual(Object.keys(body).sort(), ["error", "message", "status", "timestamp"]);
    return true;
  });
  let asked = 0;
  const badToken = new VoraClient({
    baseUrl: vora.baseUrl,
    accessToken: ({ refresh }) => (asked++, refresh ? "still-bad" : "bad"),
  });
  await assert.rejects(badToken.identities(), (error: unknown) => {
    assert.ok(error instanceof VoraUnauthorizedError);
    assert.equal(error.status, 401);
    assert.equal(error.body.status, "401");
    return true;
  });
  assert.equal(asked, 2, "a 401 asks the provider once more for a fresh token");
});
