import assert from "node:assert/strict";
import { test } from "node:test";
import type { VoraStream } from "../src/index.js";
import { act, clientFor, instance, newIdentity, next } from "./harness.js";

const CLIENTS = 50;
// Long beside the instance's restart (~3 s on a quiet machine, 8 s seen under load), whose listen backlog
// releases at once the attempts made while it boots: most of the window must fall after the boot. The instance
// announces it (reconnectWindowSeconds): 50 sockets alone would make it 1 s.
const WINDOW_MS = 20_000;

function spreadOf(values: number[]): { min: number; max: number; busiestShare: number } {
  const min = Math.min(...values);
  const max = Math.max(...values);
  const buckets = new Map<number, number>();
  for (const value of values) buckets.set(Math.floor(value / 250), (buckets.get(Math.floor(value / 250)) ?? 0) + 1);
  return { min, max, busiestShare: Math.max(...buckets.values()) / values.length };
}

test("after an instance dies, 50 streams spread their reconnects over the jitter window instead of arriving together", async () => {
  const vora = await instance("storm", { VORA_RECONNECT_WINDOW_MIN: String(WINDOW_MS / 1000) });
  const streams: VoraStream[] = [];
  const firstDelays: number[] = [];
  const reopened: number[] = [];
  const announced: Promise<unknown>[] = [];
  for (let n = 0; n < CLIENTS; n++) {
    const identity = newIdentity();
    const client = await clientFor(vora, `storm-${n}`, [identity]);
    const stream = client.stream({ identity, rules: { backoffCapMs: 4_000, connectTimeoutMs: 5_000 } });
    announced.push(next(stream, "channelOpened", 60_000));
    streams.push(stream);
  }
  await Promise.all(announced);
  assert.deepEqual(
    new Set(streams.map((stream) => stream.reconnectWindowMs)),
    new Set([WINDOW_MS]),
    "every stream knows the window",
  );
  const killedAt = Date.now();
  for (const stream of streams) {
    stream.on("reconnecting", (info) => {
      if (info.attempt === 0) firstDelays.push(info.delayMs);
    });
    void next(stream, "open", 60_000).then(() => reopened.push(Date.now() - killedAt));
  }
  await act(vora, "kill");
  await act(vora, "restart");
  const liveAt = Date.now() - killedAt;
  console.log(`instance live again ${liveAt} ms after the kill`);
  const deadline = Date.now() + 60_000;
  while (reopened.length < CLIENTS && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 100));
  for (const stream of streams) stream.close();

  assert.equal(firstDelays.length, CLIENTS, "every stream scheduled a first attempt");
  assert.equal(reopened.length, CLIENTS, "every stream came back");
  const delays = spreadOf(firstDelays);
  console.log(
    `first-attempt delays: ${Math.round(delays.min)}..${Math.round(delays.max)} ms, busiest 250 ms bucket ${(delays.busiestShare * 100).toFixed(0)}%`,
  );
  assert.ok(delays.min < WINDOW_MS * 0.25 && delays.max > WINDOW_MS * 0.75, "first attempts cover the window");
  assert.ok(delays.busiestShare <= 0.3, "no quarter second holds a crowd of first attempts");
  const arrivals = spreadOf(reopened);
  console.log(
    `reconnect arrivals after the kill: ${arrivals.min}..${arrivals.max} ms, busiest 250 ms bucket ${(arrivals.busiestShare * 100).toFixed(0)}%`,
  );
  assert.ok(arrivals.max - arrivals.min >= WINDOW_MS / 4, "arrivals are spread over seconds");
  // Attempts made while the instance boots wait in its listen backlog and all complete when it is
  // live (a burst whose size depends on the boot time, i.e. the machine's load); judge the rest.
  const later = reopened.filter((at) => at > liveAt + 500);
  const settled = spreadOf(later);
  console.log(
    `${later.length} arrivals after the boot burst, busiest 250 ms bucket ${(settled.busiestShare * 100).toFixed(0)}%`,
  );
  assert.ok(later.length >= CLIENTS * 0.2, "most clients did not all come back in the boot burst");
  assert.ok(settled.busiestShare <= 0.3, "no quarter second holds a crowd of the later arrivals");
});
