import assert from "node:assert/strict";
import { test } from "node:test";
import type { ReconnectingInfo } from "../src/index.js";
import { act, clientFor, instance, newIdentity, next, until } from "./harness.js";

// Every draw at 1% of its bound: refused attempt n then waits exactly 1% of min(30 s, 2**n s).
const RANDOM = 0.01;
const CAP_MS = 30_000;

test("after a drop, refused attempts count on from it (0, 1, 2...), and a socket dropped again before it is stable counts on too", async () => {
  const vora = await instance("attempts");
  const identity = newIdentity();
  const client = await clientFor(vora, "attempts-user", [identity]);
  const stream = client.stream({
    identity,
    transport: "websocket",
    rules: { random: () => RANDOM, backoffCapMs: CAP_MS },
  });
  await stream.opened();
  const infos: ReconnectingInfo[] = [];
  stream.on("reconnecting", (info) => infos.push(info));

  await act(vora, "kill"); // the drop, then every attempt refused (nothing listens)
  await until(() => infos.length >= 3, "the drop and two refused attempts");
  const reopened = next(stream, "open", 30_000); // listening first: it may open before restart answers
  await act(vora, "restart");
  await reopened;
  const dropped = next(stream, "reconnecting");
  await act(vora, "kill"); // far within stableAfterMs (20 s) of the open
  await dropped;
  stream.close();
  await act(vora, "restart");

  const summary = JSON.stringify(infos.map(({ attempt, delayMs, cause }) => ({ attempt, delayMs, cause })));
  assert.equal(infos[0]?.cause, "closed 1006", summary);
  assert.equal(infos.at(-1)?.cause, "closed 1006", summary);
  assert.deepEqual(
    infos.map((info) => info.attempt),
    infos.map((_, index) => index),
    `each attempt takes the next number: ${summary}`,
  );
  for (const info of infos.slice(1)) {
    const bound = Math.min(CAP_MS, 2 ** info.attempt * 1000);
    assert.ok(
      Math.abs(info.delayMs - RANDOM * bound) < 1e-6,
      `attempt ${info.attempt} backs off as refused: ${summary}`,
    );
  }
});
