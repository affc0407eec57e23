import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { once } from "node:events";
import { type AddressInfo, createServer } from "node:net";
import { test } from "node:test";
import WebSocket from "ws";
import { sseTransport, webSocketTransport } from "../src/index.js";
import type {
  StreamEvents,
  Transport,
  TransportClose,
  TransportConnection,
  TransportSink,
  TransportTarget,
  WebSocketConstructor,
} from "../src/index.js";
import { FAST_RULES, clientFor, closedPort, instance, newIdentity, next } from "./harness.js";

/** A real transport that counts the connections it was asked to open, and those the SDK closed. */
function counted(inner: Transport): Transport & { opens: number; closes: number } {
  return {
    name: inner.name,
    connectionType: inner.connectionType,
    opens: 0,
    closes: 0,
    available: () => inner.available(),
    open(target: TransportTarget, sink: TransportSink): TransportConnection {
      this.opens += 1;
      const connection = inner.open(target, sink);
      return {
        close: (code, reason) => {
          this.closes += 1;
          connection.close(code, reason);
        },
      };
    },
  };
}

/** The process's pending timers (each keeps Node from exiting). */
const timers = (): number => process.getActiveResourcesInfo().filter((kind) => kind === "Timeout").length;

for (const carrier of ["websocket", "sse"] as const) {
  test(`close() from a setup listener opens no connection (${carrier})`, async () => {
    const vora = await instance("main");
    const identity = newIdentity();
    const client = await clientFor(vora, `close-setup-${carrier}`, [identity]);
    const transport = counted(carrier === "sse" ? sseTransport() : webSocketTransport());
    const stream = client.stream({ identity, rules: FAST_RULES, transport: [transport] });
    const seen: string[] = [];
    for (const name of ["setup", "open", "closed"] as const) stream.on(name, () => seen.push(name));
    stream.on("setup", () => stream.close());
    assert.equal((await stream.closed).reason, "client");
    assert.deepEqual(seen, ["setup", "closed"]);
    assert.equal(transport.opens, 0, "a connection opened after close() would be held open, unread, for good");
  });

  test(`close() from an open or state listener leaves no timer and emits nothing after closed (${carrier})`, async () => {
    const vora = await instance("main");
    const identity = newIdentity();
    const client = await clientFor(vora, `close-open-${carrier}`, [identity]);
    for (const from of ["open", "state"] as const) {
      const stream = client.stream({ identity, rules: FAST_RULES, transport: carrier });
      const seen: string[] = [];
      for (const name of ["open", "closed"] as const) stream.on(name, () => seen.push(name));
      const left = new Promise<number>((resolve) => {
        const closeNow = (): void => {
          stream.close();
          const before = timers();
          queueMicrotask(() => resolve(timers() - before)); // once the SDK's open handling has returned
        };
        if (from === "open") stream.on("open", closeNow);
        else stream.on("state", (change: StreamEvents["state"]) => change.to === "open" && closeNow());
      });
      assert.equal(await left, 0, `close() from ${from}: the watchdog and the stability timer are not armed`);
      assert.deepEqual(seen, from === "open" ? ["open", "closed"] : ["closed"], `close() from ${from}`);
    }
  });
}

test("close() from an error listener before the fallback probe opens no probe", async () => {
  const vora = await instance("main");
  const identity = newIdentity();
  const client = await clientFor(vora, "close-probe", [identity]);
  const blocked = webSocketTransport({ url: `ws://127.0.0.1:${await closedPort()}/vora/ws` });
  const next_ = counted(sseTransport());
  const stream = client.stream({ identity, rules: FAST_RULES, fallbackAfter: 2, transport: [blocked, next_] });
  stream.on("error", (error) => {
    if (error instanceof Error && error.message.includes("trying")) stream.close(); // the app gives up here
  });
  const closed = await next(stream, "closed");
  assert.equal(closed.reason, "client");
  assert.equal(next_.opens, 0, "the probe was opened after close()");
});

test("close() from a fallback listener closes the connection that fell back and emits nothing after closed", async () => {
  const vora = await instance("main");
  const identity = newIdentity();
  const client = await clientFor(vora, "close-fallback", [identity]);
  const blocked = webSocketTransport({ url: `ws://127.0.0.1:${await closedPort()}/vora/ws` });
  const sse = counted(sseTransport());
  const stream = client.stream({ identity, rules: FAST_RULES, fallbackAfter: 2, transport: [blocked, sse] });
  const seen: string[] = [];
  for (const name of ["fallback", "open", "closed"] as const) stream.on(name, () => seen.push(name));
  stream.on("fallback", () => stream.close()); // the app tells its user about the fallback and stops there
  assert.equal((await stream.closed).reason, "client");
  await new Promise((resolve) => setImmediate(resolve));
  assert.deepEqual(seen, ["fallback", "closed"]);
  assert.equal(sse.opens, 2, "the probe, then the connection that committed the fallback");
  assert.equal(sse.closes, 2, "a connection left open after close() would be held, unread, for good");
});

test("close() right after stream() (before it started) ends it with nothing emitted or loaded after closed", async () => {
  const vora = await instance("main");
  const identity = newIdentity();
  const client = await clientFor(vora, "close-at-once", [identity]);
  const transport = counted(webSocketTransport());
  let loads = 0;
  const stream = client.stream({
    identity,
    rules: FAST_RULES,
    transport: [transport],
    lastEventIdStore: { load: () => (loads++, undefined), save: () => undefined },
  });
  const seen: string[] = [];
  for (const name of ["connecting", "setup", "closed"] as const) stream.on(name, () => seen.push(name));
  stream.close(); // a UI effect's cleanup, run at once (React's strict mode mounts, unmounts and mounts again)
  assert.equal((await stream.closed).reason, "client");
  await new Promise((resolve) => setImmediate(resolve));
  assert.deepEqual(seen, ["closed"]);
  assert.equal(loads, 0);
  assert.equal(transport.opens, 0);
});

test("a socket that errs after it opened and then closes leaves no timer behind (Node may exit at once)", async () => {
  // A server that upgrades, then sends a frame of a reserved opcode: the ws package reports an error, then closes.
  const server = createServer((socket) => {
    socket.once("data", (request) => {
      const key = /sec-websocket-key: *(\S+)/i.exec(request.toString())?.[1] ?? "";
      const accept = createHash("sha1").update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest("base64");
      socket.write(
        `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`,
      );
      socket.write(Buffer.from([0x83, 0x00])); // FIN, opcode 3 (reserved), no payload
    });
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as AddressInfo;
  try {
    const transport = webSocketTransport({
      WebSocket: WebSocket as unknown as WebSocketConstructor,
      url: `ws://127.0.0.1:${port}/vora/ws`,
    });
    const before = timers();
    const closed = new Promise<TransportClose>((resolve) => {
      transport.open(
        { baseUrl: `http://127.0.0.1:${port}/vora`, token: "t", lastEventId: undefined },
        { onOpen: () => undefined, onMessage: () => undefined, onClose: resolve },
      );
    });
    const close = await closed;
    assert.equal(close.opened, true);
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(timers(), before, "a timer armed at the error outlived the close it waited for");
  } finally {
    server.close();
  }
});
