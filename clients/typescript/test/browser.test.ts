import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { test } from "node:test";
import { CHROMIUM, accessToken, browserPage, instance, newIdentity, provision, publish } from "./harness.js";

// The page: the bundled SDK, a token handed in by the test, one stream, the first event shown.
const PAGE = `<!doctype html><meta charset="utf-8"><title>VORA SDK</title>
<pre id="log"></pre>
<script type="module">
  import { VoraClient } from "/vora-client.js";
  const log = (line) => (document.getElementById("log").textContent += line + "\\n");
  window.startStream = (baseUrl, token, identity, transport) => new Promise((resolve, reject) => {
    const client = new VoraClient({ baseUrl, accessToken: async () => token });
    const stream = client.stream({ identity, subscription: { subscribeAll: true }, transport });
    window.voraStream = stream;
    stream.on("state", (change) => log("state " + change.to + " " + change.transport));
    stream.on("event", (event) => { log("event " + event.type + " " + event.eventId); window.firstEvent ??= event; });
    stream.opened().then(resolve, reject);
  });
  window.sdkLoaded = true;
</script>`;

// Like tests/browser: skipped, saying why, where `make test-tools` could not install Chromium.
const skip = existsSync(CHROMIUM) ? false : `no Chromium at ${CHROMIUM}: make test-tools installs Debian's chromium`;

for (const transport of ["auto", "sse"] as const) {
  test(
    `bundled into a page, the SDK opens a stream (${transport}) in headless Chromium and receives an event`,
    { skip },
    async () => {
      await browserPage(PAGE, async ({ origin, tab }) => {
        const vora = await instance(`browser-${transport}`, { VORA_CORS_ORIGINS: origin });
        const identity = newIdentity();
        await provision("browser-user", [identity]);
        const token = await accessToken("browser-user");
        await tab.evaluate(
          ([baseUrl, accessTokenValue, who, carrier]) =>
            (
              window as unknown as { startStream(b: string, t: string, i: string, c: string): Promise<void> }
            ).startStream(baseUrl, accessTokenValue, who, carrier),
          [vora.baseUrl, token, identity, transport] as const,
        );
        const published = await publish(vora, identity, "callRinging", { callId: "c-browser", direction: "inbound" });
        await tab.waitForFunction(
          () => (window as unknown as { firstEvent?: unknown }).firstEvent !== undefined,
          undefined,
          { timeout: 20_000 },
        );
        const received = await tab.evaluate(
          () => (window as unknown as { firstEvent: { eventId: string; type: string } }).firstEvent,
        );
        assert.deepEqual(
          { eventId: received.eventId, type: received.type },
          { eventId: published.eventId, type: "callRinging" },
        );
        // auto opens the WebSocket (nothing blocks it here); sse is fetch with a streaming body, cross-origin.
        assert.match(
          (await tab.textContent("#log")) ?? "",
          transport === "sse" ? /state open sse/ : /state open websocket/,
        );
      }); // browserPage fails the test on any error the page threw
    },
  );
}
