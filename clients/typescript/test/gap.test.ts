import assert from "node:assert/strict";
import { test } from "node:test";
import type { StreamGap, StreamItem } from "../src/index.js";
import { FAST_RULES, clientFor, instance, newIdentity, publish, serverApi, until } from "./harness.js";

test("resumeGap: a lastEventId past retention yields resumeGap in the iterator, then the oldest retained event onwards", async () => {
  const vora = await instance("short-retention", { VORA_STREAM_MAX_LENGTH: "10" });
  const identity = newIdentity();
  const client = await clientFor(vora, "gap-user", [identity]);
  const first = await publish(vora, identity, "callRinging", { callId: "c-0" });
  const events = Array.from({ length: 400 }, (_, n) => ({
    identity,
    type: "callRinging",
    data: { callId: `c-${n + 1}` },
  }));
  const batch = await serverApi(vora, "POST", "/events/batch", { events });
  assert.equal(batch.status, 200, await batch.text());
  const page = (await (await serverApi(vora, "GET", `/identities/${identity}/events?limit=1`)).json()) as {
    events: { eventId: string }[];
  };
  const oldest = page.events[0]?.eventId;
  assert.ok(oldest !== undefined && oldest !== first.eventId, "the first event was trimmed");

  const stream = client.stream({
    identity,
    rules: FAST_RULES,
    lastEventIdStore: { load: () => first.eventId, save: () => undefined },
  });
  const gaps: StreamGap[] = [];
  stream.on("resumeGap", (gap) => gaps.push(gap));
  const items: StreamItem[] = [];
  const iterating = (async () => {
    for await (const item of stream) {
      items.push(item);
      if (items.length === 2) break;
    }
  })();
  await iterating;
  await until(() => gaps.length === 1, "the resumeGap callback");
  const [gap, firstDelivered] = items;
  assert.equal(gap?.type, "resumeGap");
  assert.deepEqual(gap?.data, { reason: "retention", requestedEventId: first.eventId, oldestEventId: oldest });
  assert.equal(firstDelivered?.eventId, oldest);
  stream.close();
});
