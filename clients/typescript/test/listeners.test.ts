import assert from "node:assert/strict";
import { test } from "node:test";
import { FAST_RULES, clientFor, instance, newIdentity, publishAndReceive } from "./harness.js";

test("an error listener that throws is called once per error, and the stream carries on", async () => {
  const vora = await instance("main");
  const identity = newIdentity();
  const client = await clientFor(vora, "throwing-error-listener", [identity]);
  // A lastEventId VORA would refuse: the stream reports an error, then opens live.
  const stream = client.stream({ identity, rules: FAST_RULES, transport: "websocket", lastEventId: "not-an-id" });
  let calls = 0;
  stream.on("error", () => {
    calls += 1;
    throw new Error("the app's error reporter is broken");
  });
  await stream.opened();
  assert.equal(calls, 1, "the listener's own error is not fed back to it");
  await publishAndReceive(stream, vora, identity, "presence", { status: "busy" });
  stream.close();
});
