import assert from "node:assert/strict";
import { test } from "node:test";
import { VoraClient } from "../src/index.js";
import type { AccessTokenProvider } from "../src/index.js";
import {
  FAST_RULES,
  devauth,
  instance,
  newIdentity,
  next,
  provision,
  publishAndReceive,
  serverApi,
  until,
} from "./harness.js";

const SCOPES = "scope.vora.identities scope.vora.calls scope.vora.presence scope.vora.recording";

/** The app's token provider, as docs/clients.md shows it: client credentials, cached, fetched anew when VORA refused it. */
function clientCredentials(tokenUrl: string, clientId: string, secret: string) {
  const seen = { fetched: [] as string[], refreshes: 0, expiresAt: 0 };
  let token: string | undefined;
  const provider: AccessTokenProvider = async ({ refresh }) => {
    if (refresh) seen.refreshes += 1;
    if (token === undefined || refresh) {
      const answer = await fetch(tokenUrl, {
        method: "POST",
        headers: {
          Authorization: `Basic ${btoa(`${clientId}:${secret}`)}`,
          "Content-Type": "application/x-www-form-urlencoded",
        },
        body: new URLSearchParams({ grant_type: "client_credentials", scope: SCOPES }),
      });
      if (!answer.ok) throw new Error(`token endpoint: ${answer.status} ${await answer.text()}`);
      const body = (await answer.json()) as { access_token: string; expires_in: number };
      token = body.access_token;
      seen.expiresAt = Date.now() + body.expires_in * 1000;
      seen.fetched.push(token);
    }
    return token;
  };
  return { provider, seen };
}

for (const transport of ["websocket", "sse"] as const) {
  test(`the journey with tokens from the dev authorization server, refreshed after they expire (${transport})`, async () => {
    const auth = await devauth("short-tokens", 2);
    const vora = await instance("trusts-devauth", auth.vora);
    const identity = newIdentity();
    await provision(auth.clientId, [identity]); // a service client's token has its client_id as sub
    const { provider, seen } = clientCredentials(auth.tokenUrl, auth.clientId, auth.clientSecret);
    const client = new VoraClient({ baseUrl: vora.baseUrl, accessToken: provider });

    assert.ok((await client.identities()).includes(identity), "the provisioned identity is listed");
    const stream = client.stream({
      identity,
      transport,
      rules: FAST_RULES,
      subscription: { subscribeAll: false, events: ["callRinging", "presence"] },
    });
    await stream.opened();
    await publishAndReceive(stream, vora, identity, "callRinging", { callId: "c-1", direction: "inbound" });
    assert.deepEqual([seen.fetched.length, seen.refreshes], [1, 0]);

    // The access token expires; the session ends under the stream, whose new setup VORA refuses (401)
    // until the provider, asked to refresh, fetched a new token.
    await until(() => Date.now() > seen.expiresAt + 1_000, "the first access token to expire", 10_000);
    const reopened = next(stream, "open", 30_000);
    const answer = await serverApi(vora, "DELETE", `/identities/${identity}/sessions?reason=disconnected`);
    assert.equal(answer.status, 200, await answer.text());
    await reopened;
    await publishAndReceive(stream, vora, identity, "presence", { status: "busy" });
    assert.deepEqual([seen.fetched.length, seen.refreshes], [2, 1]);
    assert.notEqual(seen.fetched[0], seen.fetched[1]);

    const closed = next(stream, "closed");
    await client.logout(identity);
    assert.equal((await closed).reason, "logout");
    assert.equal(stream.state, "closed");
  });
}
