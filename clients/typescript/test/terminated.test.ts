import assert from "node:assert/strict";
import { test } from "node:test";
import type { VoraClient, VoraStream } from "../src/index.js";
import type { Instance } from "./harness.js";
import {
  FAST_RULES,
  act,
  clientFor,
  instance,
  newIdentity,
  next,
  onlyCallEndedArrives,
  publishAndReceive,
  serverApi,
} from "./harness.js";

type Carrier = "websocket" | "sse";

async function openStream(
  vora: Instance,
  user: string,
  transport: Carrier,
): Promise<{ client: VoraClient; stream: VoraStream; identity: string }> {
  const identity = newIdentity();
  const client = await clientFor(vora, `${user}-${transport}`, [identity]);
  const stream = client.stream({ identity, rules: FAST_RULES, transport });
  await stream.opened();
  return { client, stream, identity };
}

/** After a reason that means "set up again", the stream gets a new session and events flow again. */
async function assertSetsUpAgain(
  vora: Instance,
  stream: VoraStream,
  identity: string,
  reason: string,
  end: () => Promise<void>,
): Promise<void> {
  const terminated = next(stream, "channelTerminated");
  const reconnecting = next(stream, "reconnecting");
  const setup = next(stream, "setup");
  await end();
  assert.equal((await terminated).data.reason, reason);
  assert.equal((await reconnecting).setup, true, `${reason}: set up again`);
  await setup;
  await next(stream, "open");
  await publishAndReceive(stream, vora, identity, "presence", { status: "available" });
  stream.close();
}

for (const transport of ["websocket", "sse"] as const) {
  test(`revoked: the stream stops for good (${transport})`, async () => {
    const vora = await instance("main");
    const { stream, identity } = await openStream(vora, "revoked-user", transport);
    const closed = next(stream, "closed");
    const answer = await serverApi(vora, "DELETE", `/identities/${identity}/sessions?reason=revoked`);
    assert.equal(answer.status, 200, await answer.text());
    assert.equal((await closed).reason, "revoked");
    assert.equal(stream.state, "closed");
  });

  test(`disconnected: the stream sets up a new session and carries on (${transport})`, async () => {
    const vora = await instance("main");
    const { stream, identity } = await openStream(vora, "disconnected-user", transport);
    await assertSetsUpAgain(vora, stream, identity, "disconnected", async () => {
      const answer = await serverApi(vora, "DELETE", `/identities/${identity}/sessions?reason=disconnected`);
      assert.equal(answer.status, 200, await answer.text());
    });
  });

  test(`stream.subscribe applies now and again after the session is set up anew (${transport})`, async () => {
    const vora = await instance("main");
    const { stream, identity } = await openStream(vora, "resubscribe-user", transport);
    await stream.subscribe({ subscribeAll: false, events: ["callEnded"] });
    const onlyEnded = (): Promise<void> => onlyCallEndedArrives(stream, vora, identity);
    await onlyEnded();
    const setup = next(stream, "setup");
    const answer = await serverApi(vora, "DELETE", `/identities/${identity}/sessions?reason=disconnected`);
    assert.equal(answer.status, 200, await answer.text());
    await setup;
    await next(stream, "open");
    await onlyEnded(); // a new session starts subscribed to everything: the SDK applied the choice again
    stream.close();
  });

  test(`replaced: evicted by the same user's newer sessions, the stream sets up again (${transport})`, async () => {
    const vora = await instance("main");
    const { client, stream, identity } = await openStream(vora, "replaced-user", transport);
    await assertSetsUpAgain(vora, stream, identity, "replaced", async () => {
      for (let n = 0; n < 5; n++) await client.setup({ identity }); // VORA_MAX_SESSIONS_PER_IDENTITY is 5
    });
  });

  test(`tokenExpired: a session past VORA_SESSION_MAX_AGE is set up again (${transport})`, async () => {
    const vora = await instance("short-sessions", {
      VORA_SESSION_TTL: "4",
      VORA_SESSION_MAX_AGE: "4",
      VORA_WS_LEASE_INTERVAL: "1",
    });
    const { stream, identity } = await openStream(vora, "expired-user", transport);
    await assertSetsUpAgain(vora, stream, identity, "tokenExpired", async () => {});
  });

  test(`maintenance: a draining instance's stream reconnects with lastEventId to the same session (${transport})`, async () => {
    const vora = await instance("drain");
    const { stream, identity } = await openStream(vora, "maintenance-user", transport);
    const before = (await publishAndReceive(stream, vora, identity, "presence", { status: "busy" })).published;
    const terminated = next(stream, "channelTerminated");
    const reconnecting = next(stream, "reconnecting");
    await act(vora, "terminate");
    assert.equal((await terminated).data.reason, "maintenance");
    assert.equal((await reconnecting).setup, false);
    const reopened = next(stream, "open", 30_000); // listening first: it may open before restart answers
    await act(vora, "restart");
    const open = await reopened;
    assert.equal(open.lastEventId, before.eventId);
    await publishAndReceive(stream, vora, identity, "presence", { status: "away" });
    stream.close();
  });

  test(`logout from another client of the same user stops the stream (${transport})`, async () => {
    const vora = await instance("main");
    const { client, stream, identity } = await openStream(vora, "logout-user", transport);
    const closed = next(stream, "closed");
    await client.logout(identity);
    const info = await closed;
    assert.equal(info.reason, "logout");
    assert.match(info.detail, /logout/);
  });
}
