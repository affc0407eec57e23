import assert from "node:assert/strict";
import { test } from "node:test";
import { webSocketTransport } from "../src/index.js";
import type { Transport, TransportConnection, TransportSink, TransportTarget } from "../src/index.js";
import { FAST_RULES, clientFor, instance, newIdentity, next, publishAndReceive, serverApi } from "./harness.js";

// VORA sends only the lifecycle types and channelTerminated reasons it documents, so no server path can send a new
// one. This transport is the real WebSocket transport, and the frames it adds are the real frames of that socket
// with what a newer server might send instead: the stream's own message handling gets them as it gets any frame.
function newerServer(): Transport {
  const inner = webSocketTransport();
  return {
    name: inner.name,
    connectionType: inner.connectionType,
    available: () => inner.available(),
    open(target: TransportTarget, sink: TransportSink): TransportConnection {
      return inner.open(target, {
        onOpen: () => sink.onOpen(),
        onClose: (close) => sink.onClose(close),
        onMessage: (text) => {
          const envelope = JSON.parse(text) as { type: string; data: Record<string, unknown> };
          if (envelope.type === "channelTerminated") {
            // The real channelTerminated, with a reason this SDK does not know.
            sink.onMessage(JSON.stringify({ ...envelope, data: { ...envelope.data, reason: "sessionMoved" } }));
            return;
          }
          sink.onMessage(text);
          if (envelope.type === "channelOpened" || envelope.type === "heartbeat") {
            // After each real lifecycle frame, a copy whose type this SDK does not know.
            sink.onMessage(
              JSON.stringify({ ...envelope, type: "channelPaused", data: { ...envelope.data, resumeInSeconds: 3 } }),
            );
          }
        },
      });
    },
  };
}

test("lifecycle types and channelTerminated reasons the SDK does not know (a newer server's) are ignored, never an error", async () => {
  const vora = await instance("main");
  const identity = newIdentity();
  const client = await clientFor(vora, "forward-user", [identity]);
  const stream = client.stream({ identity, rules: FAST_RULES, transport: [newerServer()] });
  const errors: unknown[] = [];
  const states: string[] = [];
  const delivered: string[] = [];
  stream.on("error", (error) => errors.push(error));
  stream.on("state", (change) => states.push(`${change.to} ${change.cause}`));
  stream.on("event", (event) => delivered.push(event.type));
  await stream.opened();
  await next(stream, "heartbeat", 20_000); // the instance sends one every 5 s, each followed by an unknown type
  await publishAndReceive(stream, vora, identity, "presence", { status: "busy" });
  assert.deepEqual(errors, []);
  assert.deepEqual(delivered, ["presence"]);
  assert.deepEqual(states, ["open websocket open"]);

  // channelTerminated with an unknown reason: the session is over as far as this SDK knows, so it sets up again.
  const terminated = next(stream, "channelTerminated");
  const setup = next(stream, "setup", 20_000);
  const reopened = next(stream, "open", 20_000);
  const answer = await serverApi(vora, "DELETE", `/identities/${identity}/sessions?reason=disconnected`);
  assert.equal(answer.status, 200, await answer.text());
  assert.equal((await terminated).data.reason, "sessionMoved" as string);
  await setup;
  await reopened;
  await publishAndReceive(stream, vora, identity, "presence", { status: "available" });
  assert.deepEqual(delivered, ["presence", "presence"]);
  assert.equal(stream.state, "open");
  stream.close();
});
