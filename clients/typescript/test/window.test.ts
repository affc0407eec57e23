import assert from "node:assert/strict";
import { test } from "node:test";
import { act, clientFor, instance, newIdentity, next } from "./harness.js";

test("the stream keeps the reconnect window channelOpened announces, and each heartbeat updates it", async () => {
  // One socket a second: the instance's window is its socket count, in seconds (one worker).
  const vora = await instance("window-per-socket", { VORA_RECONNECT_RATE: "1", VORA_WS_HEARTBEAT_INTERVAL: "1" });
  const identities = [newIdentity(), newIdentity(), newIdentity()];
  const client = await clientFor(vora, "window-user", identities);
  const [firstIdentity, ...otherIdentities] = identities;
  if (firstIdentity === undefined) throw new Error("no identity");
  const first = client.stream({ identity: firstIdentity, transport: "websocket" });
  assert.equal(first.reconnectWindowMs, undefined, "nothing announced yet");
  const opened = await next(first, "channelOpened");
  assert.equal(opened.data.reconnectWindowSeconds, 1, "the instance's only socket");
  assert.equal(first.reconnectWindowMs, 1_000);
  const others = otherIdentities.map((identity) => client.stream({ identity, transport: "websocket" }));
  await Promise.all(others.map((stream) => next(stream, "channelOpened")));
  const heartbeat = await next(first, "heartbeat", 10_000, (message) => message.data.reconnectWindowSeconds === 3);
  assert.equal(heartbeat.data.reconnectWindowSeconds, 3, "three sockets now");
  assert.equal(first.reconnectWindowMs, 3_000, "the latest announcement wins");
  for (const stream of [first, ...others]) stream.close();
});

test("after a crowd drop and after maintenance, the first attempt waits within the announced window, not 20 s", async () => {
  const vora = await instance("window-2s", { VORA_RECONNECT_WINDOW_MIN: "2", VORA_RECONNECT_WINDOW_MAX: "2" });
  const identity = newIdentity();
  const client = await clientFor(vora, "window-drop-user", [identity]);
  // Every draw at the top of its window: without the announced 2 s the first delay would be 19.8 s. A socket is
  // stable at once, so the maintenance after the reconnect is a first attempt too.
  const stream = client.stream({
    identity,
    transport: "websocket",
    rules: { random: () => 0.99, stableAfterMs: 0, connectTimeoutMs: 3_000 },
  });
  await next(stream, "channelOpened");
  assert.equal(stream.reconnectWindowMs, 2_000);

  const dropped = next(stream, "reconnecting");
  await act(vora, "kill");
  const drop = await dropped;
  const droppedAt = Date.now();
  assert.equal(drop.attempt, 0);
  assert.match(drop.cause, /closed 1006/);
  assert.ok(drop.delayMs <= 2_000, `1006: within the announced 2 s (${drop.delayMs} ms)`);
  // The attempt is made when the delay ends; the killed instance refuses it at once.
  const refused = await next(stream, "reconnecting", 10_000);
  const waitedMs = Date.now() - droppedAt;
  assert.notEqual(refused.attempt, 0, "a failed attempt, not another drop");
  assert.ok(waitedMs >= drop.delayMs - 50 && waitedMs < 3_000, `the first attempt came ${waitedMs} ms after the drop`);
  const reopened = next(stream, "open", 30_000); // listening first: it may open before restart answers
  await act(vora, "restart");
  await reopened;
  await next(stream, "channelOpened");
  assert.equal(stream.reconnectWindowMs, 2_000, "announced again by the restarted instance");

  const terminated = next(stream, "channelTerminated");
  const drained = next(stream, "reconnecting");
  await act(vora, "terminate");
  assert.equal((await terminated).data.reason, "maintenance");
  const maintenance = await drained;
  assert.equal(maintenance.cause, "maintenance");
  assert.ok(maintenance.delayMs <= 2_000, `maintenance: within the announced 2 s (${maintenance.delayMs} ms)`);
  stream.close();
});
