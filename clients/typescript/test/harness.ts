// Helpers for the SDK's suite: the pytest side's control server starts real VORA instances and mints real tokens.
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { createServer as createHttpServer } from "node:http";
import type { AddressInfo } from "node:net";
import { createServer } from "node:net";
import { after } from "node:test";
import type { Page } from "playwright-core";
import WebSocket from "ws";
import { VoraClient, webSocketTransport } from "../src/index.js";
import type { ReconnectRules, StreamEvents, Transport, VoraStream, WebSocketConstructor } from "../src/index.js";

const CONTROL = process.env["VORA_TEST_CONTROL_URL"];
const SERVER_KEY = process.env["VORA_TEST_SERVER_KEY"] ?? "";
if (CONTROL === undefined)
  throw new Error("VORA_TEST_CONTROL_URL is unset: run this suite through pytest tests/clients");

export interface Instance {
  name: string;
  baseUrl: string;
  serverApiUrl: string;
  port: number;
}

async function control<T>(path: string, body: unknown = {}): Promise<T> {
  const response = await fetch(CONTROL + path, {
    method: "POST",
    body: JSON.stringify(body),
    headers: { "Content-Type": "application/json" },
  });
  const answer = (await response.json()) as T & { error?: string };
  if (!response.ok) throw new Error(`control ${path}: ${answer.error ?? response.status}`);
  return answer;
}

/** Start (or reuse) a named VORA instance with extra VORA_* variables. */
export async function instance(name: string, env: Record<string, string> = {}): Promise<Instance> {
  return { name, ...(await control<Omit<Instance, "name">>("/instances", { name, env })) };
}

/** kill (SIGKILL), restart, terminate (SIGTERM: drain), pause (SIGSTOP) or resume (SIGCONT) an instance. */
export async function act(
  target: Instance,
  action: "kill" | "restart" | "terminate" | "pause" | "resume",
): Promise<void> {
  await control(`/instances/${target.name}/${action}`);
}

/** nginx in front of instances: "refuse" answers /vora/ws with its own 403, "strip" drops Upgrade and Connection. */
export async function proxy(
  name: string,
  upstreams: Instance[],
  websocket: "pass" | "refuse" | "strip",
): Promise<Instance> {
  const first = upstreams[0];
  if (first === undefined) throw new Error("a proxy needs an upstream");
  const { baseUrl } = await control<{ baseUrl: string }>("/proxies", {
    name,
    instances: upstreams.map((u) => u.name),
    websocket,
  });
  return { ...first, name: `proxy-${name}`, baseUrl };
}

/** The dev authorization server (devauth/) of a name: its token endpoint, a service client, what VORA needs to trust it. */
export interface DevAuth {
  issuer: string;
  tokenUrl: string;
  clientId: string;
  clientSecret: string;
  /** VORA_* variables for an instance that trusts this provider, and only it. */
  vora: Record<string, string>;
}

/** Start (or reuse) a dev authorization server whose access tokens live accessTokenTtl seconds. */
export async function devauth(name: string, accessTokenTtl: number): Promise<DevAuth> {
  return control<DevAuth>("/devauth", { name, accessTokenTtl });
}

/** Mint a real access token (signed by the dev key VORA trusts). */
export async function accessToken(sub: string, scopes?: string[]): Promise<string> {
  return (await control<{ accessToken: string }>("/tokens", scopes === undefined ? { sub } : { sub, scopes }))
    .accessToken;
}

/** Give a user identities in VORA's directory. */
export async function provision(sub: string, identities: string[]): Promise<void> {
  await control("/identities", { sub, identities });
}

let counter = 0;
/** A fresh identity, so tests never see each other's events. */
export function newIdentity(): string {
  counter += 1;
  return `7${String(Date.now() % 1e7).padStart(7, "0")}${String(counter).padStart(3, "0")}`;
}

/** A client of an instance for a provisioned user, with a token provider that mints real tokens. */
export async function clientFor(target: Instance, sub: string, identities: string[]): Promise<VoraClient> {
  await provision(sub, identities);
  return new VoraClient({ baseUrl: target.baseUrl, accessToken: () => accessToken(sub) });
}

/** Call the server API the way the telephony side does. */
export async function serverApi(target: Instance, method: string, path: string, body?: unknown): Promise<Response> {
  const init: RequestInit = {
    method,
    headers: { Authorization: `Bearer ${SERVER_KEY}`, "Content-Type": "application/json" },
  };
  if (body !== undefined) init.body = JSON.stringify(body);
  return fetch(target.serverApiUrl + path, init);
}

export interface Published {
  eventId: string;
  sequenceNumber: number;
}

/** Publish one event through the server API and return its eventId. */
export async function publish(
  target: Instance,
  identity: string,
  type: string,
  data: Record<string, unknown>,
): Promise<Published> {
  const response = await serverApi(target, "POST", `/identities/${identity}/events`, { type, data });
  if (response.status !== 200 && response.status !== 201)
    throw new Error(`publish: ${response.status} ${await response.text()}`);
  return (await response.json()) as Published;
}

/** Resolve with the next value of a stream event that passes the filter, or reject after timeoutMs. */
export function next<K extends keyof StreamEvents>(
  stream: VoraStream,
  name: K,
  timeoutMs = 20_000,
  filter: (value: StreamEvents[K]) => boolean = () => true,
): Promise<StreamEvents[K]> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      stop();
      reject(new Error(`no ${String(name)} within ${timeoutMs} ms (state ${stream.state})`));
    }, timeoutMs);
    const stop = stream.on(name, (value) => {
      if (!filter(value)) return;
      clearTimeout(timer);
      stop();
      resolve(value);
    });
  });
}

/** Wait until a condition holds, checking after each stream event. */
export async function until(condition: () => boolean, what: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** Test-sized reconnect windows (the README's are seconds; the rules are the same). */
export const FAST_RULES: Partial<ReconnectRules> = {
  massDropWindowMs: 1_000,
  singleDropWindowMs: 200,
  backoffCapMs: 2_000,
  connectTimeoutMs: 3_000,
};

export { webSocketTransport };

/** The WebSocket transport on the ws package, which shows a refused handshake's status and body (a browser's WebSocket shows neither). */
export const wsPackage = (): Transport =>
  webSocketTransport({ WebSocket: WebSocket as unknown as WebSocketConstructor });

// Every stream a test file opens is closed when the file ends, passed or failed, so its process can exit.
const opened: VoraStream[] = [];
const originalStream = VoraClient.prototype.stream;
VoraClient.prototype.stream = function tracked(this: VoraClient, options) {
  const stream = originalStream.call(this, options);
  opened.push(stream);
  return stream;
};
after(() => {
  for (const stream of opened) stream.close();
});

// VORA_SDK_TRACE=1 logs every stream's events with timestamps (for a failing run's output).
if (process.env["VORA_SDK_TRACE"]) {
  const original = VoraClient.prototype.stream;
  VoraClient.prototype.stream = function traced(this: VoraClient, options) {
    const stream = original.call(this, options);
    const names = ["state", "reconnecting", "closed", "error", "setup", "channelTerminated", "resumeGap"] as const;
    for (const name of names) {
      stream.on(name, (value: unknown) =>
        console.log(
          `${new Date().toISOString()} [${options.identity}] ${name} ${value instanceof Error ? value.message : JSON.stringify(value)}`,
        ),
      );
    }
    return stream;
  };
}

/** Publish one event and resolve with the stream's delivery of it (listening first: it may arrive before publish answers). */
export async function publishAndReceive(
  stream: VoraStream,
  target: Instance,
  identity: string,
  type: string,
  data: Record<string, unknown>,
): Promise<{ published: Published; received: StreamEvents["event"] }> {
  const events: StreamEvents["event"][] = [];
  const stop = stream.on("event", (event) => events.push(event));
  try {
    const published = await publish(target, identity, type, data);
    const already = events.find((event) => event.eventId === published.eventId);
    const received = already ?? (await next(stream, "event", 20_000, (event) => event.eventId === published.eventId));
    return { published, received };
  } finally {
    stop();
  }
}

/** Publish a callHeld, then a callEnded, to a stream subscribed to callEnded alone: only the callEnded arrives. */
export async function onlyCallEndedArrives(stream: VoraStream, target: Instance, identity: string): Promise<void> {
  const delivered: string[] = [];
  const stop = stream.on("event", (event) => delivered.push(event.type));
  try {
    await publish(target, identity, "callHeld", { callId: "c-held" });
    await publishAndReceive(stream, target, identity, "callEnded", { callId: "c-ended" });
    assert.deepEqual(delivered, ["callEnded"], "the held call is outside the subscription");
  } finally {
    stop();
  }
}

/** A loopback port nothing listens on (bound, then closed), for a connection that is refused. */
export async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  if (address === null || typeof address === "string") throw new Error("no port");
  return address.port;
}

/** A running tinyproxy (a corporate forward proxy: CONNECT to any port), or why there is none here. */
export interface ForwardProxy {
  url: string;
  /** The URL with user:password@, for a proxy started with credentials. */
  urlWithCredentials: string;
  port: number;
  /** The requests it received so far: [method, target], such as ["CONNECT", "127.0.0.1:18085"]. */
  requests(): Promise<[string, string][]>;
}

/** Start (or reuse) the tinyproxy of a name, with Basic auth when credentials are given; a string says why it cannot run. */
export async function forwardProxy(name: string, credentials?: [string, string]): Promise<ForwardProxy | string> {
  const answer = await control<{ skip?: string; url: string; urlWithCredentials: string; port: number }>(
    "/forward-proxies",
    credentials === undefined ? { name } : { name, credentials },
  );
  if (answer.skip !== undefined) return answer.skip;
  return {
    url: answer.url,
    urlWithCredentials: answer.urlWithCredentials,
    port: answer.port,
    requests: async () =>
      (await control<{ requests: [string, string][] }>(`/forward-proxies/${name}/requests`)).requests,
  };
}

/** Debian's Chromium (make test-tools), driven through playwright-core, which downloads nothing. */
export const CHROMIUM = process.env["CHROMIUM"] ?? "/usr/bin/chromium";

/**
 * Serve html at / and the bundled SDK at /vora-client.js on a loopback origin, open it in a tab of a fresh headless
 * Chromium context, run body, and close it all (passed or failed). VORA answers the origin only with it in
 * VORA_CORS_ORIGINS.
 */
export async function browserPage(
  html: string,
  body: (page: { origin: string; tab: Page }) => Promise<void>,
): Promise<void> {
  const bundle = await readFile(new URL("../browser/vora-client.js", import.meta.url), "utf8");
  const server = createHttpServer((request, response) => {
    const sdk = request.url === "/vora-client.js";
    response.writeHead(200, { "Content-Type": sdk ? "text/javascript" : "text/html" });
    response.end(sdk ? bundle : html);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const { chromium } = await import("playwright-core"); // loaded by the browser tests alone
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-dev-shm-usage",
      "--disable-background-networking",
      "--disable-component-update",
    ],
  });
  try {
    const tab = await (await browser.newContext()).newPage();
    const errors: string[] = [];
    tab.on("pageerror", (error) => errors.push(String(error)));
    await tab.goto(origin + "/");
    await tab.waitForFunction(() => (window as unknown as { sdkLoaded?: boolean }).sdkLoaded === true);
    await body({ origin, tab });
    if (errors.length > 0) throw new Error(`the page threw: ${errors.join("; ")}`);
  } finally {
    await browser.close();
    server.close();
  }
}
