import assert from "node:assert/strict";
import { test } from "node:test";
import { VoraAccessTokenProviderError, VoraAccessTokenRefusedError, VoraClient } from "../src/index.js";
import type { AccessTokenProvider, StateChange, VoraStream } from "../src/index.js";
import {
  FAST_RULES,
  accessToken,
  instance,
  newIdentity,
  next,
  provision,
  publish,
  publishAndReceive,
  serverApi,
} from "./harness.js";

type Step = "fail" | "refuse" | "hold";

const FAILED = "the access token provider failed: Error: the authorization server is unreachable";

/** The app's provider: real tokens, except that the next calls follow a plan (unreachable, revoked, hanging). */
class ScriptedTokens {
  plan: Step[] = [];
  calls = 0;
  readonly #waiters: { count: number; resolve: () => void }[] = [];
  readonly #released: Promise<void>;
  #release: () => void = () => undefined;

  constructor(readonly sub: string) {
    this.#released = new Promise((resolve) => (this.#release = resolve));
  }

  readonly provider: AccessTokenProvider = async () => {
    this.calls += 1;
    const step = this.plan.shift();
    for (const waiter of this.#waiters.filter((w) => w.count <= this.calls)) waiter.resolve();
    if (step === "fail") throw new Error("the authorization server is unreachable");
    if (step === "refuse") throw new VoraAccessTokenRefusedError("the refresh token was revoked");
    if (step === "hold") await this.#released;
    return accessToken(this.sub);
  };

  /** Let a held call answer. */
  release(): void {
    this.#release();
  }

  /** Resolve once the provider has been called count times in all. */
  called(count: number): Promise<void> {
    if (this.calls >= count) return Promise.resolve();
    return new Promise((resolve) => this.#waiters.push({ count, resolve }));
  }
}

/** Record a stream's transitions and errors. */
function watch(stream: VoraStream): { states: StateChange[]; errors: unknown[] } {
  const seen = { states: [] as StateChange[], errors: [] as unknown[] };
  stream.on("state", (change) => seen.states.push(change));
  stream.on("error", (error) => seen.errors.push(error));
  return seen;
}

const reconnects = (states: StateChange[]): string[] =>
  states.filter((change) => change.to === "reconnecting").map((change) => change.cause);

for (const transport of ["websocket", "sse"] as const) {
  test(`a provider that fails twice delays the stream, which then resumes with what was published meanwhile (${transport})`, async () => {
    const vora = await instance("main");
    const identity = newIdentity();
    const tokens = new ScriptedTokens(`flaky-provider-${transport}`);
    await provision(tokens.sub, [identity]);
    const client = new VoraClient({ baseUrl: vora.baseUrl, accessToken: tokens.provider });
    const stream = client.stream({ identity, transport, rules: FAST_RULES });
    const events: string[] = [];
    stream.on("event", (event) => events.push(event.eventId));
    await stream.opened();
    const first = (await publishAndReceive(stream, vora, identity, "presence", { status: "busy" })).published;
    const { states, errors } = watch(stream);

    // The session ends; its new setup meets an OAuth server out of reach twice, and the third call answers once
    // the test has published.
    tokens.plan = ["fail", "fail", "hold"];
    const held = tokens.called(tokens.calls + 3);
    const answer = await serverApi(vora, "DELETE", `/identities/${identity}/sessions?reason=disconnected`);
    assert.equal(answer.status, 200, await answer.text());
    await Promise.race([
      held,
      stream.closed.then((info) =>
        assert.fail(`the stream closed (${info.reason}: ${info.detail}) instead of retrying`),
      ),
    ]);
    const meanwhile = [
      (await publish(vora, identity, "presence", { status: "away" })).eventId,
      (await publish(vora, identity, "presence", { status: "available" })).eventId,
    ];
    assert.notEqual(stream.state, "open");
    const reopened = next(stream, "open");
    tokens.release();
    await reopened;
    const last = (await publishAndReceive(stream, vora, identity, "presence", { status: "busy" })).published;
    assert.deepEqual(events, [first.eventId, ...meanwhile, last.eventId], "each once, in order, none lost");

    assert.deepEqual(
      reconnects(states).filter((cause) => cause.startsWith("the access token provider")),
      [FAILED, FAILED],
    );
    assert.ok(!states.some((change) => change.to === "closed"));
    const failures = errors.filter((error) => error instanceof VoraAccessTokenProviderError);
    assert.equal(failures.length, 2);
    assert.ok(failures.every((error) => error instanceof VoraAccessTokenProviderError && !error.refused));
    stream.close();
  });
}

test("a provider that says the user is logged out stops the stream unauthorized, with no retry", async () => {
  const vora = await instance("main");
  const identity = newIdentity();
  const tokens = new ScriptedTokens("logged-out-provider");
  await provision(tokens.sub, [identity]);
  const client = new VoraClient({ baseUrl: vora.baseUrl, accessToken: tokens.provider });
  tokens.plan = ["refuse"];
  const stream = client.stream({ identity, rules: FAST_RULES });
  const { states, errors } = watch(stream);
  const closed = await stream.closed;
  assert.equal(closed.reason, "unauthorized");
  assert.ok(closed.error instanceof VoraAccessTokenProviderError && closed.error.refused);
  assert.ok(closed.error.cause instanceof VoraAccessTokenRefusedError);
  assert.deepEqual(
    states.map((change) => change.to),
    ["closed"],
  );
  assert.deepEqual(errors, [closed.error]);
  assert.equal(tokens.calls, 1);

  // Outside a stream the provider's failure reaches the caller, as a 401 the SDK made.
  tokens.plan = ["fail"];
  await assert.rejects(
    client.identities(),
    (error) => error instanceof VoraAccessTokenProviderError && error.status === 401 && !error.refused,
  );
});

test("a provider that hangs is given up after its time limit and asked again", async () => {
  const vora = await instance("main");
  const identity = newIdentity();
  const tokens = new ScriptedTokens("hanging-provider");
  await provision(tokens.sub, [identity]);
  const client = new VoraClient({ baseUrl: vora.baseUrl, accessToken: tokens.provider, accessTokenTimeoutMs: 300 });
  tokens.plan = ["hold"]; // never released
  const stream = client.stream({ identity, rules: FAST_RULES });
  const { states, errors } = watch(stream);
  await stream.opened();
  assert.equal(tokens.calls, 2);
  assert.deepEqual(reconnects(states), ["the access token provider gave no token within 0.3 s"]);
  assert.deepEqual(
    errors.map((error) => error instanceof VoraAccessTokenProviderError),
    [true],
  );
  await publishAndReceive(stream, vora, identity, "presence", { status: "busy" });
  stream.close();
});
