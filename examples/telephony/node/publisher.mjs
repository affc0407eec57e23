// A publisher of telephony events to VORA's server API, as docs/server-api.md says a correct one behaves.
//
//   VORA_SERVER_API=http://127.0.0.1:18086/vora/server/v1 VORA_SERVER_API_KEY=... node publisher.mjs
//
// Reads one command per line on stdin: an event {"identity", "type", "data", "idempotencyKey"?} or a
// batch {"events": [event, ...]}. Writes one JSON line per retry ({"outcome": "retrying", ...}) and one
// per event once it is settled: published, duplicate (a retry VORA had already stored), refused (fix
// the event: never retried) or failed (gave up after the bounded attempts; the key says what to retry).
// Node 20, no dependencies: fetch and node:crypto only.
import { randomUUID } from "node:crypto";
import { createInterface } from "node:readline";

const BASE = (process.env.VORA_SERVER_API ?? "http://127.0.0.1:18086/vora/server/v1").replace(/\/$/, "");
const KEY = process.env.VORA_SERVER_API_KEY ?? "";
const MAX_ATTEMPTS = Number(process.env.VORA_PUBLISH_MAX_ATTEMPTS ?? 6);
const BACKOFF_MS = Number(process.env.VORA_PUBLISH_BACKOFF_MS ?? 200);
const MAX_DELAY_MS = 30_000;
const REQUEST_TIMEOUT_MS = 10_000;

/** Print one outcome as a JSON line. */
function report(outcome) {
  process.stdout.write(JSON.stringify(outcome) + "\n");
}

/** Wait Retry-After when VORA sent one, never less than the jittered exponential backoff of this attempt. */
function delayMs(attempt, retryAfter) {
  const backoff = Math.min(MAX_DELAY_MS, BACKOFF_MS * 2 ** attempt);
  // Half fixed, half random: publishers that failed together do not all come back in the same instant.
  const jittered = backoff / 2 + Math.random() * (backoff / 2);
  const seconds = Number(retryAfter);
  return Math.max(jittered, Number.isFinite(seconds) && seconds > 0 ? seconds * 1000 : 0);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** POST a JSON body; return {status, retryAfter, body}, or {status: 0, error} when no answer came. */
async function post(path, body) {
  let response;
  try {
    response = await fetch(BASE + path, {
      method: "POST",
      headers: { Authorization: `Bearer ${KEY}`, "Content-Type": "application/json" },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
    });
    const text = await response.text();
    let parsed = null;
    try {
      parsed = text ? JSON.parse(text) : null;
    } catch {
      // Not VORA's JSON: a proxy's error page, say. The status still says what happened.
    }
    return { status: response.status, retryAfter: response.headers.get("Retry-After"), body: parsed };
  } catch (error) {
    // Refused, reset or timed out: VORA may or may not have stored it, so the retry keeps the same key.
    return { status: 0, error: String(error.cause?.code ?? error.name ?? error) };
  }
}

/** Tell whether a publish may be sent again: VORA's 503, a proxy's 502/504, or no answer at all. */
function retryable(status) {
  // 502 and 504 come from a load balancer in front of VORA: the publish may have arrived, the key makes it safe.
  return status === 503 || status === 502 || status === 504 || status === 0;
}

/** Give an event the idempotencyKey it keeps on every retry. */
function keyed(event) {
  return { ...event, idempotencyKey: event.idempotencyKey ?? randomUUID() };
}

/** Publish one event; retry 503s and lost connections with the same key; never retry a refusal. */
async function publishOne(command) {
  const { identity, ...event } = keyed(command);
  const path = `/identities/${encodeURIComponent(identity)}/events`;
  for (let attempt = 0; ; attempt++) {
    const answer = await post(path, event);
    if (answer.status === 200 || answer.status === 201) {
      const { eventId, sequenceNumber, duplicate } = answer.body;
      const outcome = duplicate ? "duplicate" : "published";
      return report({ outcome, idempotencyKey: event.idempotencyKey, eventId, sequenceNumber });
    }
    if (!retryable(answer.status)) {
      // 400 (the event is wrong), 401 (the key is), 409 (the key was used for another event): retrying cannot help.
      const message = answer.body?.message ?? "";
      return report({ outcome: "refused", idempotencyKey: event.idempotencyKey, status: answer.status, message });
    }
    if (attempt + 1 >= MAX_ATTEMPTS) {
      return report({ outcome: "failed", idempotencyKey: event.idempotencyKey, status: answer.status });
    }
    const waitMs = delayMs(attempt, answer.retryAfter);
    report({
      outcome: "retrying",
      idempotencyKey: event.idempotencyKey,
      status: answer.status,
      reason: answer.body?.message ?? answer.error,
      waitMs: Math.round(waitMs),
    });
    await sleep(waitMs);
  }
}

/** Publish a batch; retry the whole batch on 503 and the items answered 503 alone, each with its own key. */
async function publishBatch(events) {
  let pending = events.map((event, index) => ({ index, event: keyed(event) }));
  const settled = new Map();
  for (let attempt = 0; pending.length > 0; attempt++) {
    const answer = await post("/events/batch", { events: pending.map((p) => p.event) });
    let again = [];
    // The batch's own status and reason, or, when it was answered 200, those of the items refused for now.
    let status = answer.status;
    let reason = answer.body?.message ?? answer.error;
    if (answer.status === 200) {
      const reasons = new Set();
      answer.body.results.forEach((result, position) => {
        const { index, event } = pending[position];
        const key = event.idempotencyKey;
        if (result.status === "published" || result.status === "duplicate") {
          settled.set(index, { outcome: result.status, index, idempotencyKey: key, eventId: result.eventId });
        } else if (result.error.status === "503") {
          again.push(pending[position]); // this item alone was not stored: retry it with its key
          reasons.add(result.error.message);
        } else {
          const { status, message } = result.error;
          settled.set(index, { outcome: "refused", index, idempotencyKey: key, status: Number(status), message });
        }
      });
      status = 503;
      reason = [...reasons].join("; ");
    } else if (retryable(answer.status)) {
      again = pending;
    } else {
      const message = answer.body?.message ?? "";
      for (const { index, event } of pending) {
        settled.set(index, {
          outcome: "refused",
          index,
          idempotencyKey: event.idempotencyKey,
          status: answer.status,
          message,
        });
      }
    }
    if (again.length > 0 && attempt + 1 >= MAX_ATTEMPTS) {
      for (const { index, event } of again) {
        settled.set(index, { outcome: "failed", index, idempotencyKey: event.idempotencyKey, status });
      }
      again = [];
    }
    if (again.length > 0) {
      const waitMs = delayMs(attempt, answer.retryAfter);
      report({
        outcome: "retrying",
        indexes: again.map((p) => p.index),
        status,
        reason,
        waitMs: Math.round(waitMs),
      });
      await sleep(waitMs);
    }
    pending = again;
  }
  [...settled.keys()].sort((a, b) => a - b).forEach((index) => report(settled.get(index)));
}

// One command at a time, in order: events of one identity must reach VORA in the order they happened.
for await (const line of createInterface({ input: process.stdin })) {
  if (!line.trim()) continue;
  const command = JSON.parse(line);
  await (Array.isArray(command.events) ? publishBatch(command.events) : publishOne(command));
}
