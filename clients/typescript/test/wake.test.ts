import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { test } from "node:test";
import type { Page } from "playwright-core";
import {
  CHROMIUM,
  accessToken,
  act,
  browserPage,
  clientFor,
  instance,
  newIdentity,
  provision,
  publish,
} from "./harness.js";

// The page: the bundled SDK, one stream whose transitions, events and errors are logged with the page's own clock.
// wallClock is the SDK's documented seam for the one thing no test can do here, a system suspend: `skewMs` moves the
// wall clock forward while the timers' clock goes on as before, which is what a device that slept sees on waking.
const PAGE = `<!doctype html><meta charset="utf-8"><title>VORA SDK wake</title>
<script type="module">
  import { VoraClient } from "/vora-client.js";
  window.log = [];
  window.events = [];
  window.skewMs = 0;
  const at = () => performance.now();
  window.startStream = (baseUrl, token, identity, transport, random) => {
    const client = new VoraClient({ baseUrl, accessToken: async () => token });
    const rules = { backoffCapMs: 60_000, connectTimeoutMs: 3_000, wallClock: () => Date.now() + window.skewMs };
    if (random !== undefined) rules.random = () => random;
    const stream = client.stream({ identity, subscription: { subscribeAll: true }, transport, rules });
    window.voraStream = stream;
    stream.on("state", (c) => log.push({ at: at(), kind: "state", to: c.to, cause: c.cause }));
    stream.on("reconnecting", (r) => log.push({ at: at(), kind: "reconnecting", delayMs: r.delayMs, attempt: r.attempt, cause: r.cause }));
    stream.on("event", (event) => events.push(event.eventId));
    stream.on("error", (e) => log.push({ at: at(), kind: "error", cause: String(e?.message), retryAfterSeconds: e?.retryAfterSeconds }));
    return stream.opened();
  };
  window.sdkLoaded = true;
</script>`;

interface LogEntry {
  at: number;
  kind: "state" | "reconnecting" | "error";
  to?: string;
  cause: string;
  delayMs?: number;
  attempt?: number;
  retryAfterSeconds?: number;
}

interface WakePage {
  log: LogEntry[];
  events: string[];
  skewMs: number;
  voraStream: { close(): void; state: string };
  startStream(baseUrl: string, token: string, identity: string, transport: string, random?: number): Promise<void>;
}

const skip = existsSync(CHROMIUM) ? false : `no Chromium at ${CHROMIUM}: make test-tools installs Debian's chromium`;

async function logOf(tab: Page): Promise<LogEntry[]> {
  return tab.evaluate(() => (window as unknown as WakePage).log);
}

async function eventsOf(tab: Page): Promise<string[]> {
  return tab.evaluate(() => (window as unknown as WakePage).events);
}

async function waitForEvents(tab: Page, count: number): Promise<void> {
  await tab.waitForFunction((n) => (window as unknown as WakePage).events.length >= n, count, { timeout: 30_000 });
}

/** How many listeners of these types the page's window and document hold, as DevTools counts them. */
async function listeners(tab: Page, types: readonly string[]): Promise<number> {
  const cdp = await tab.context().newCDPSession(tab);
  let count = 0;
  for (const target of ["window", "document"]) {
    const { result } = await cdp.send("Runtime.evaluate", { expression: target });
    const found = await cdp.send("DOMDebugger.getEventListeners", { objectId: result.objectId ?? "" });
    count += found.listeners.filter((listener) => types.includes(listener.type)).length;
  }
  await cdp.detach();
  return count;
}

const PLATFORM_EVENTS = ["online", "offline", "pageshow", "visibilitychange", "resume"] as const;

for (const transport of ["websocket", "sse"] as const) {
  test(
    `in Chromium on ${transport}, going offline drops the stream at once, and coming online during a long backoff reconnects at once and delivers what was missed, each once`,
    { skip },
    async () => {
      await browserPage(PAGE, async ({ origin, tab }) => {
        const vora = await instance(`wake-offline-${transport}`, { VORA_CORS_ORIGINS: origin });
        const identity = newIdentity();
        await provision("wake-user", [identity]);
        const token = await accessToken("wake-user");
        const before = await listeners(tab, PLATFORM_EVENTS);
        // Every jittered draw near the top of its window: the backoff doubles towards a long wait (n = 3: ~8 s).
        await tab.evaluate(([b, t, i, c]) => (window as unknown as WakePage).startStream(b, t, i, c, 0.999), [
          vora.baseUrl,
          token,
          identity,
          transport,
        ] as const);
        assert.equal((await listeners(tab, PLATFORM_EVENTS)) - before, 5, "the stream listens to the five events");
        const published = [(await publish(vora, identity, "presence", { status: "busy" })).eventId];
        await waitForEvents(tab, 1);

        const offlineAt = await tab.evaluate(() => performance.now());
        await tab.context().setOffline(true); // real network emulation: fires offline, fails new requests
        await tab.waitForFunction(
          () => (window as unknown as WakePage).log.some((e) => e.kind === "reconnecting" && e.cause === "offline"),
          undefined,
          { timeout: 5_000 }, // the heartbeat deadline is 15 s here: only the offline event can be this quick
        );
        const drop = (await logOf(tab)).find((e) => e.kind === "reconnecting" && e.cause === "offline");
        assert.ok(
          drop !== undefined && drop.at - offlineAt < 2_000,
          `dropped ${drop && drop.at - offlineAt} ms after offline`,
        );
        for (const status of ["available", "doNotDisturb", "away"])
          published.push((await publish(vora, identity, "presence", { status })).eventId);

        // Attempts fail while offline and back off (2 s, 4 s, then ~8 s): wait for a long one to begin.
        await tab.waitForFunction(
          () => (window as unknown as WakePage).log.some((e) => e.kind === "reconnecting" && (e.delayMs ?? 0) >= 7_000),
          undefined,
          { timeout: 30_000 },
        );
        const long = (await logOf(tab)).find((e) => e.kind === "reconnecting" && (e.delayMs ?? 0) >= 7_000);
        assert.ok(long !== undefined);
        const onlineAt = await tab.evaluate(() => performance.now());
        await tab.context().setOffline(false); // fires online
        await tab.waitForFunction(
          (since) =>
            (window as unknown as WakePage).log.some((e) => e.kind === "state" && e.to === "open" && e.at > since),
          onlineAt,
          { timeout: 5_000 },
        );
        const reopened = (await logOf(tab)).find((e) => e.kind === "state" && e.to === "open" && e.at > onlineAt);
        assert.ok(reopened !== undefined);
        const backoffEnd = long.at + (long.delayMs ?? 0);
        assert.ok(
          reopened.at < backoffEnd - 3_000,
          `open ${Math.round(reopened.at - onlineAt)} ms after online, the backoff ending ${Math.round(backoffEnd - onlineAt)} ms after it`,
        );
        console.log(
          `${transport}: offline -> reconnecting ${Math.round(drop.at - offlineAt)} ms; online -> open ` +
            `${Math.round(reopened.at - onlineAt)} ms, where the backoff would have ended ${Math.round(backoffEnd - onlineAt)} ms after online`,
        );
        await waitForEvents(tab, 4);
        published.push((await publish(vora, identity, "presence", { status: "busy" })).eventId);
        await waitForEvents(tab, 5);
        assert.deepEqual(await eventsOf(tab), published, "in order, none lost, none twice");

        // close(): the listeners go, and going offline and online again changes nothing.
        await tab.evaluate(() => (window as unknown as WakePage).voraStream.close());
        assert.equal(await listeners(tab, PLATFORM_EVENTS), before, "no listener outlives the stream");
        const closedLog = (await logOf(tab)).length;
        await tab.context().setOffline(true);
        await tab.context().setOffline(false);
        await tab.evaluate(() => new Promise((resolve) => setTimeout(resolve, 200)));
        assert.equal((await logOf(tab)).length, closedLog);
      });
    },
  );
}

test(
  "in Chromium, a page resumed after its wall clock passed the dead-connection deadline (the link silent) reconnects at once; a healthy one does not",
  { skip },
  async () => {
    await browserPage(PAGE, async ({ origin, tab }) => {
      const vora = await instance("wake-clock", { VORA_CORS_ORIGINS: origin });
      const publisher = await instance("wake-clock-publisher"); // the same Redis: publishes while vora is stopped
      const identity = newIdentity();
      await provision("wake-user", [identity]);
      const token = await accessToken("wake-user");
      await tab.evaluate(([b, t, i]) => (window as unknown as WakePage).startStream(b, t, i, "websocket"), [
        vora.baseUrl,
        token,
        identity,
      ] as const);
      const published = [(await publish(vora, identity, "presence", { status: "busy" })).eventId];
      await waitForEvents(tab, 1);

      // Healthy: a heartbeat every 5 s (deadline 15 s), the wall clock 5 s ahead: each check keeps the connection.
      await tab.evaluate(() => {
        const page = window as unknown as WakePage;
        page.skewMs = 5_000;
        document.dispatchEvent(new Event("visibilitychange")); // headless Chromium's page is always visible
        document.dispatchEvent(new Event("resume"));
        window.dispatchEvent(new PageTransitionEvent("pageshow"));
      });
      published.push((await publish(vora, identity, "presence", { status: "available" })).eventId);
      await waitForEvents(tab, 2);
      assert.deepEqual(
        (await logOf(tab)).filter((e) => e.kind === "reconnecting"),
        [],
        "a connection with a message within the deadline is kept",
      );

      // The link goes silent (the instance SIGSTOPped, as a NAT entry gone), and the wall clock jumps 20 s as over a
      // suspend, while the timers' clock does not: the watchdog would need 15 s more, the resume check needs none.
      await act(vora, "pause");
      try {
        const log = await tab.evaluate(() => {
          const page = window as unknown as WakePage;
          page.skewMs = 25_000;
          document.dispatchEvent(new Event("resume"));
          return page.log; // synchronously after the dispatch
        });
        const drop = log.find((e) => e.kind === "reconnecting");
        assert.ok(drop !== undefined, "reconnecting at once");
        assert.match(drop.cause, /^no message for \d+ ms by the wall clock \(resume\)$/);
        for (const status of ["doNotDisturb", "away"])
          published.push((await publish(publisher, identity, "presence", { status })).eventId);
      } finally {
        await act(vora, "resume");
      }
      await waitForEvents(tab, 4);
      published.push((await publish(vora, identity, "presence", { status: "busy" })).eventId);
      await waitForEvents(tab, 5);
      assert.deepEqual(await eventsOf(tab), published, "in order, none lost, none twice");
      await tab.evaluate(() => (window as unknown as WakePage).voraStream.close());
    });
  },
);

test(
  "in Chromium, coming online during a wait that includes a Retry-After (a 429 on setup) cuts only the jitter: no attempt before the Retry-After ends",
  { skip },
  async () => {
    await browserPage(PAGE, async ({ origin, tab }) => {
      // One setup per user per 6 s: the stream's own setup, right after the app's, is refused 429 with Retry-After.
      const vora = await instance("wake-retry-after", {
        VORA_CORS_ORIGINS: origin,
        VORA_SETUP_RATE_PER_USER: "1",
        VORA_SETUP_RATE_WINDOW: "6",
      });
      const identity = newIdentity();
      const client = await clientFor(vora, "wake-limited", [identity]);
      await client.setup({ identity });
      const token = await accessToken("wake-limited");
      const opened = tab.evaluate(([b, t, i]) => (window as unknown as WakePage).startStream(b, t, i, "sse", 0.999), [
        vora.baseUrl,
        token,
        identity,
      ] as const);
      await tab.waitForFunction(
        () => (window as unknown as WakePage).log.some((e) => e.kind === "reconnecting"),
        undefined,
        { timeout: 10_000 },
      );
      const refusal = (await logOf(tab)).find((e) => e.kind === "error");
      const waiting = (await logOf(tab)).find((e) => e.kind === "reconnecting");
      assert.ok(refusal?.retryAfterSeconds !== undefined && refusal.retryAfterSeconds >= 2, JSON.stringify(refusal));
      assert.ok(waiting !== undefined);
      const retryAfterMs = refusal.retryAfterSeconds * 1000;
      // Retry-After plus nearly all of the first backoff (uniform(0, 2 s), drawn at 0.999).
      assert.ok((waiting.delayMs ?? 0) > retryAfterMs + 1_900, JSON.stringify(waiting));
      await tab.context().setOffline(true);
      await tab.context().setOffline(false); // online, well within the Retry-After
      const onlineAt = await tab.evaluate(() => performance.now());
      assert.ok(onlineAt < waiting.at + retryAfterMs - 1_000, "online came before the Retry-After ended");
      await opened;
      const refusals = (await logOf(tab)).filter((e) => e.kind === "error" && e.retryAfterSeconds !== undefined);
      assert.equal(refusals.length, 1, "no attempt before the Retry-After (VORA would refuse it again)");
      const open = (await logOf(tab)).find((e) => e.kind === "state" && e.to === "open");
      assert.ok(open !== undefined);
      // Not before the Retry-After (a small allowance: the page's clock and the draws are taken a moment apart)...
      assert.ok(
        open.at >= waiting.at + retryAfterMs - 50,
        `open ${Math.round(open.at - waiting.at)} ms after the refusal`,
      );
      // ...but without the jitter after it, which the online event cut.
      assert.ok(
        open.at < waiting.at + (waiting.delayMs ?? 0) - 1_000,
        `open ${Math.round(open.at - waiting.at)} ms after the refusal, its wait ${Math.round(waiting.delayMs ?? 0)} ms`,
      );
      await tab.evaluate(() => (window as unknown as WakePage).voraStream.close());
    });
  },
);
