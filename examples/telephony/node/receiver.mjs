// A receiver of VORA's signed webhooks: the push gateway's pushNotification and the telephony side's
// readiness callback (holdUpReady / holdUpNotReady), as docs/mobile-push.md and spec/vora-webhooks.yaml say.
//
//   VORA_PUSH_SECRET=... VORA_HOLDUP_CALLBACK_SECRET=... PORT=8443 node receiver.mjs
//
// POST /push takes pushNotification (VORA_PUSH_GATEWAY_URL=http://HOST:PORT/push), POST /readiness the
// readiness signals (VORA_HOLDUP_CALLBACK_URL=http://HOST:PORT/readiness). Each request's signature is
// checked over the raw bytes before anything else (401 if it is not VORA's or is older than 300 s), a
// repeated X-Vora-Delivery is answered 200 without handling it again, and 2xx comes only once the message
// was handled (here: written as a JSON line on stdout), so that VORA retries what was not.
// Node 20, no dependencies: node:http and node:crypto only.
import { createHmac, timingSafeEqual } from "node:crypto";
import { createServer } from "node:http";

const TOLERANCE_S = 300;
const MAX_BODY = 64 * 1024;
const REMEMBER_MS = 24 * 3600 * 1000;
const ROUTES = {
  "/push": { secret: process.env.VORA_PUSH_SECRET, events: ["pushNotification"] },
  "/readiness": { secret: process.env.VORA_HOLDUP_CALLBACK_SECRET, events: ["holdUpReady", "holdUpNotReady"] },
};

for (const [path, { secret }] of Object.entries(ROUTES)) {
  if (!secret) throw new Error(`set VORA_PUSH_SECRET and VORA_HOLDUP_CALLBACK_SECRET: ${path} has no secret`);
}

/** Print one line of what happened. */
function report(line) {
  process.stdout.write(JSON.stringify(line) + "\n");
}

/** Tell whether X-Vora-Signature is VORA's HMAC-SHA256 of "t." + raw body, made within the tolerance. */
export function isFromVora(secret, header, rawBody, nowS = Date.now() / 1000) {
  const parts = Object.fromEntries(
    String(header ?? "")
      .split(",")
      .map((part) => [part.slice(0, part.indexOf("=")), part.slice(part.indexOf("=") + 1)]),
  );
  if (!/^[0-9]+$/.test(parts.t ?? "") || Math.abs(nowS - Number(parts.t)) > TOLERANCE_S) return false;
  const expected = createHmac("sha256", secret).update(`${parts.t}.`).update(rawBody).digest();
  const given = Buffer.from(/^[0-9a-f]{64}$/.test(parts.v1 ?? "") ? parts.v1 : "", "hex");
  // timingSafeEqual compares in constant time; it needs equal lengths, and the length says nothing secret.
  return given.length === expected.length && timingSafeEqual(given, expected);
}

// Delivery ids already handled. One process keeps them in memory; several receivers behind a load balancer
// need a shared store (for example Redis SET NX with an expiry) so that a retry reaching another one is dropped too.
const handled = new Map();
const inProgress = new Set();

function alreadyHandled(delivery) {
  const now = Date.now();
  for (const [id, at] of handled) {
    if (now - at < REMEMBER_MS) break; // insertion order is time order: the rest are younger
    handled.delete(id);
  }
  return handled.has(delivery);
}

/** Act on a verified message: hand a push to APNs/FCM, resume or release a held call. Here: report it. */
async function handle(event, body) {
  if (event === "pushNotification") {
    report({ handled: event, delivery: body.pushId, platform: body.platform, callId: body.callId, body });
  } else {
    report({ handled: event, delivery: body.signalId, callId: body.callId, reason: body.reason ?? null, body });
  }
}

function answer(response, status, message) {
  const body = message ? JSON.stringify({ message }) : "";
  response.writeHead(status, { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(body) });
  response.end(body);
}

async function receive(request, response) {
  const route = ROUTES[new URL(request.url, "http://receiver").pathname];
  if (!route) return answer(response, 404, "no such webhook");
  if (request.method !== "POST") return answer(response, 405, "POST only");
  const chunks = [];
  let size = 0;
  for await (const chunk of request) {
    size += chunk.length;
    if (size > MAX_BODY) return answer(response, 413, "body too large");
    chunks.push(chunk);
  }
  const raw = Buffer.concat(chunks); // verify these exact bytes: re-serialised JSON would not match
  if (!isFromVora(route.secret, request.headers["x-vora-signature"], raw)) {
    report({ refused: 401, path: request.url });
    return answer(response, 401, "bad or stale signature");
  }
  const event = request.headers["x-vora-event"];
  const delivery = request.headers["x-vora-delivery"] ?? "";
  if (!route.events.includes(event)) return answer(response, 400, `unexpected event ${event}`);
  if (alreadyHandled(delivery)) {
    report({ duplicate: delivery, event });
    return answer(response, 200); // handled before: 2xx so that VORA stops retrying it
  }
  if (inProgress.has(delivery)) {
    // VORA gave up waiting on the first attempt (VORA_PUSH_TIMEOUT) while it is still being handled: not twice.
    return answer(response, 503, "being handled; retry");
  }
  inProgress.add(delivery);
  try {
    await handle(event, JSON.parse(raw.toString("utf8")));
  } catch (error) {
    report({ failed: delivery, error: String(error) });
    return answer(response, 500, "not handled; retry"); // VORA retries 5xx with the same delivery id
  } finally {
    inProgress.delete(delivery);
  }
  handled.set(delivery, Date.now());
  answer(response, 204);
}

const server = createServer((request, response) => {
  receive(request, response).catch((error) => {
    // A request aborted mid-body, say: answer if still possible, never take the process down.
    report({ error: String(error) });
    if (!response.headersSent) answer(response, 500, "not handled; retry");
  });
});

server.listen(Number(process.env.PORT ?? 0), process.env.HOST ?? "127.0.0.1", () => {
  report({ listening: server.address().port });
});
