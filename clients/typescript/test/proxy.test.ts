import assert from "node:assert/strict";
import { test } from "node:test";
import { HttpsProxyAgent } from "https-proxy-agent";
import { ProxyAgent, fetch as undiciFetch } from "undici";
import WebSocket from "ws";
import { VoraClient, VoraNetworkError, VoraUnauthorizedError, sseTransport, webSocketTransport } from "../src/index.js";
import type { TokenRequest, WebSocketConstructor } from "../src/index.js";
import {
  FAST_RULES,
  accessToken,
  closedPort,
  forwardProxy,
  instance,
  newIdentity,
  provision,
  publishAndReceive,
  until,
} from "./harness.js";

// What docs/clients.md tells a Node 20 app behind a forward proxy to do: undici's fetch with a ProxyAgent (CONNECT,
// Proxy-Authorization from the URL's credentials) and the ws package with https-proxy-agent (CONNECT for ws:// and
// wss:// alike, so the proxy never sees the socket's URL and its token).
function behindProxy(proxyUrl: string): { fetch: typeof fetch; WebSocket: WebSocketConstructor; close(): void } {
  const dispatcher = new ProxyAgent(proxyUrl);
  const agent = new HttpsProxyAgent(proxyUrl);
  const proxiedFetch = ((input: string, init?: RequestInit) =>
    undiciFetch(input, { ...(init as object), dispatcher })) as unknown as typeof fetch;
  class ProxiedWebSocket extends WebSocket {
    constructor(address: string) {
      super(address, { agent });
    }
  }
  return {
    fetch: proxiedFetch,
    WebSocket: ProxiedWebSocket as unknown as WebSocketConstructor,
    close: () => void dispatcher.close(),
  };
}

test("behind a Basic-auth forward proxy, REST, the WebSocket and SSE (the client's fetch) all pass through it", async (t) => {
  const proxy = await forwardProxy("with-credentials", ["vora", "s3cret-Pass"]);
  if (typeof proxy === "string") return t.skip(proxy);
  const vora = await instance("main");
  const identity = newIdentity();
  await provision("proxied-user", [identity]);
  const node = behindProxy(proxy.urlWithCredentials);
  const client = new VoraClient({
    baseUrl: vora.baseUrl,
    accessToken: () => accessToken("proxied-user"),
    fetch: node.fetch,
  });
  assert.deepEqual(await client.identities(), [identity]);
  const ws = client.stream({
    identity,
    rules: FAST_RULES,
    transport: [webSocketTransport({ WebSocket: node.WebSocket }), sseTransport({ fetch: node.fetch })],
  });
  await ws.opened();
  assert.equal(ws.transport, "websocket"); // CONNECT passes the upgrade: nothing falls back
  await publishAndReceive(ws, vora, identity, "callRinging", { callId: "fp-1" });
  ws.close();
  // "sse" builds its transport itself: it reads with the client's fetch, so it takes the proxy too.
  const sse = client.stream({ identity, rules: FAST_RULES, transport: "sse" });
  await sse.opened();
  await publishAndReceive(sse, vora, identity, "callEnded", { callId: "fp-1" });
  sse.close();
  node.close();
  const requests = await proxy.requests();
  assert.ok(requests.length >= 2, JSON.stringify(requests));
  assert.deepEqual(
    new Set(requests.map(([method, target]) => `${method} ${target}`)),
    new Set([`CONNECT 127.0.0.1:${vora.port}`]),
  );
});

test("through a proxy that is down, neither the WebSocket nor SSE (the client's fetch) opens: nothing bypasses it", async () => {
  const vora = await instance("main");
  const identity = newIdentity();
  await provision("down-proxy-user", [identity]);
  const direct = new VoraClient({ baseUrl: vora.baseUrl, accessToken: () => accessToken("down-proxy-user") });
  const session = await direct.setupSession({ identity });
  const node = behindProxy(`http://127.0.0.1:${await closedPort()}`);
  const client = new VoraClient({
    baseUrl: vora.baseUrl,
    accessToken: () => accessToken("down-proxy-user"),
    fetch: node.fetch,
  });
  await assert.rejects(client.identities(), VoraNetworkError);
  // "sse" builds its transport itself, with the client's fetch; the WebSocket gets the proxied ws constructor.
  for (const transport of ["sse", [webSocketTransport({ WebSocket: node.WebSocket })]] as const) {
    const stream = client.stream({ identity, rules: FAST_RULES, transport, webSocketToken: session.webSocketToken });
    let opened = false;
    stream.on("open", () => (opened = true));
    let reconnects = 0;
    stream.on("reconnecting", () => (reconnects += 1));
    await until(() => reconnects >= 3, "three failed opens through the proxy that is down");
    assert.equal(opened, false);
    assert.notEqual(stream.state, "closed");
    stream.close();
  }
  node.close();
});

test("a proxy's 407 is no VORA 401: REST rejects with VoraNetworkError, the stream retries and never refreshes the token", async (t) => {
  const proxy = await forwardProxy("wants-credentials", ["vora", "s3cret-Pass"]);
  if (typeof proxy === "string") return t.skip(proxy);
  const vora = await instance("main");
  const identity = newIdentity();
  await provision("proxy-407-user", [identity]);
  const direct = new VoraClient({ baseUrl: vora.baseUrl, accessToken: () => accessToken("proxy-407-user") });
  const session = await direct.setupSession({ identity });
  const asked: boolean[] = [];
  const provider = async ({ refresh }: TokenRequest) => {
    asked.push(refresh);
    return accessToken("proxy-407-user");
  };
  const node = behindProxy(proxy.url); // no credentials
  const client = new VoraClient({ baseUrl: vora.baseUrl, accessToken: provider, fetch: node.fetch });
  const refused = await client.identities().then(
    () => assert.fail("the proxy let an unauthenticated request through"),
    (error: unknown) => error,
  );
  assert.ok(refused instanceof VoraNetworkError, String(refused));
  assert.ok(!(refused instanceof VoraUnauthorizedError));
  assert.match((refused as Error).message, /407/); // undici keeps the proxy's answer in the cause of "fetch failed"
  const stream = client.stream({
    identity,
    rules: FAST_RULES,
    webSocketToken: session.webSocketToken,
    transport: [webSocketTransport({ WebSocket: node.WebSocket }), sseTransport({ fetch: node.fetch })],
  });
  const causes: string[] = [];
  stream.on("reconnecting", ({ cause }) => causes.push(cause));
  await until(() => causes.length >= 4, "four refused attempts");
  assert.notEqual(stream.state, "closed", JSON.stringify(stream.closeInfo));
  assert.ok(
    causes.some((cause) => /407/.test(cause)),
    JSON.stringify(causes),
  );
  assert.ok(!asked.includes(true), `the provider was asked to refresh: ${JSON.stringify(asked)}`);
  stream.close();
  node.close();
  const requests = await proxy.requests();
  assert.ok(requests.filter(([method]) => method === "CONNECT").length >= 4, JSON.stringify(requests));
});
