import assert from "node:assert/strict";
import { test } from "node:test";
import type { VoraStream } from "../src/index.js";
import { FAST_RULES, clientFor, instance, newIdentity, next, publishAndReceive, until } from "./harness.js";

/** Count a stream's setups (the one at start included). */
function countSetups(stream: VoraStream): { count: number } {
  const counter = { count: 0 };
  stream.on("setup", () => (counter.count += 1));
  return counter;
}

for (const transport of ["websocket", "sse"] as const) {
  test(`two copies of an app past a one-session limit evict each other once each, then one closes with replaced (${transport})`, async () => {
    const vora = await instance("one-session", { VORA_MAX_SESSIONS_PER_IDENTITY: "1" });
    const identity = newIdentity();
    const first = (await clientFor(vora, `tabs-user-${transport}`, [identity])).stream({ identity, rules: FAST_RULES, transport });
    const firstSetups = countSetups(first);
    await first.opened();
    const second = (await clientFor(vora, `tabs-user-${transport}`, [identity])).stream({ identity, rules: FAST_RULES, transport });
    const secondSetups = countSetups(second);
    const streams = [first, second];
    await until(() => streams.some((stream) => stream.state === "closed"), "one of the two to give up");
    const [loser] = streams.filter((stream) => stream.state === "closed");
    const [winner] = streams.filter((stream) => stream.state !== "closed");
    assert.ok(loser !== undefined && winner !== undefined);
    assert.equal(loser.closeInfo?.reason, "replaced");
    await winner.opened();
    // Two setups to start, then one after replaced for each (maxReplacedSetups 1): four in all, and no more.
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
