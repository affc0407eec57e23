import assert from "node:assert/strict";
import { test } from "node:test";
import { VoraClient } from "../src/index.js";
import type { Instance } from "./harness.js";
import {
  FAST_RULES,
  accessToken,
  instance,
  newIdentity,
  next,
  onlyCallEndedArrives,
  provision,
  serverApi,
} from "./harness.js";

/** The global fetch, with the first subscription request replaced by what `first` does; setups counted. */
function firstSubscription(first: (forward: () => Promise<Response>) => Promise<Response>): {
  fetch: typeof fetch;
  setups: () => number;
} {
  let setups = 0;
  let subscriptions = 0;
  const wrapped = async (input: string | URL | Request, init?: RequestInit): Promise<Response> => {
    const url = input instanceof Request ? input.url : String(input);
    if (url.endsWith("/identity/setup")) setups += 1;
    if (url.endsWith("/eventSubscription") && subscriptions++ === 0) return first(() => fetch(input, init));
    return fetch(input, init);
  };
  return { fetch: wrapped as typeof fetch, setups: () => setups };
}

async function sessionsOf(vora: Instance, identity: string): Promise<unknown[]> {
  const answer = await serverApi(vora, "GET", `/identities/${identity}/sessions`);
  const text = await answer.text();
  assert.equal(answer.status, 200, text);
  return (JSON.parse(text) as { sessions: unknown[] }).sessions;
}

test("a subscription cut before its answer is retried on the same session: no second session is set up", async () => {
  const vora = await instance("main");
  const identity = newIdentity();
  await provision("subscription-cut", [identity]);
  const wrapped = firstSubscription(() => Promise.reject(new TypeError("fetch failed"))); // a phone's radio drops
  const client = new VoraClient({
    baseUrl: vora.baseUrl,
    accessToken: () => accessToken("subscription-cut"),
    fetch: wrapped.fetch,
  });
  const stream = client.stream({
    identity,
    rules: FAST_RULES,
    subscription: { subscribeAll: false, events: ["callEnded"] },
  });
  const reconnecting = next(stream, "reconnecting");
  await stream.opened();
  assert.equal((await reconnecting).setup, true);
  assert.equal(wrapped.setups(), 1, "a second setup leaves the first session to count toward the user's cap");
  assert.equal((await sessionsOf(vora, identity)).length, 1);
  await onlyCallEndedArrives(stream, vora, identity);
  stream.close();
});

test("a session that ended before its subscription went through is replaced by a new setup", async () => {
  const vora = await instance("main");
  const identity = newIdentity();
  await provision("subscription-ended", [identity]);
  const wrapped = firstSubscription(async (forward) => {
    // Its session ends between setup and subscription (evicted, or expired during a backoff): VORA answers 404.
    const ended = await serverApi(vora, "DELETE", `/identities/${identity}/sessions?reason=disconnected`);
    assert.equal(ended.status, 200, await ended.text());
    return forward();
  });
  const client = new VoraClient({
    baseUrl: vora.baseUrl,
    accessToken: () => accessToken("subscription-ended"),
    fetch: wrapped.fetch,
  });
  const stream = client.stream({
    identity,
    rules: FAST_RULES,
    subscription: { subscribeAll: false, events: ["callEnded"] },
  });
  const errors: unknown[] = [];
  stream.on("error", (error) => errors.push(error));
  await stream.opened();
  assert.equal(wrapped.setups(), 2);
  assert.match(String(errors[0]), /No active session/);
  assert.equal((await sessionsOf(vora, identity)).length, 1);
  await onlyCallEndedArrives(stream, vora, identity);
  stream.close();
});
