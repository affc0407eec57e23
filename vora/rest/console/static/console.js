// The VORA web console, on the TypeScript SDK (@vora/client, bundled by `make sdk` and served at ./sdk/):
// log in (authorization code + PKCE, or a pasted token), open an identity's stream through the SDK and
// watch everything it does on one timeline: events, its state machine, reconnects, fallback, close codes.

const store = window.sessionStorage;
const $ = (id) => document.getElementById(id);
const LOG_KEY = "vora.log";
const RESUME_KEY = "vora.resume"; // the last stream's identity and lastEventId, across the login redirect and reloads
const LOG_LIMIT = 5000; // a tab kept open all day: the oldest entries go first
// Heartbeats (one each 30 s by default) are kept apart, the newest of them: hidden, they must not push a quiet day's
// events out of the timeline, nor out of the rows a reload keeps.
const HEARTBEAT_LIMIT = 100;
const SAVED_LIMIT = 1000; // what survives the login and logout redirects (sessionStorage is small)
const CONNECTION_TYPES = { websocket: "WebSocket", sse: "ServerSentEvents" };
const STREAM_EVENT = /^(call|presence|recording)/;

let sdk = null;
let config = null;
let discovery = null;
let loginUnavailable = null; // why "Log in" is off although an authorization server is configured
let client = null;
let stream = null;
let streamOptions = null;
let liveConnection = null; // the transport connection open now, for "Drop the connection"
let storedSubscription = null;
let simulator = null; // the development endpoint's templates, when VORA serves it
let eventTypes = [];
const entries = []; // oldest first
const waiting = []; // entries that arrived while paused, the newest LOG_LIMIT of them (and HEARTBEAT_LIMIT heartbeats)
const bodies = new WeakMap(); // entry → its rows in the table
let dropped = 0; // entries that arrived while paused and were pushed out of waiting by newer ones
let paused = false;
let resumePoint = null; // {identity, lastEventId} of the stream the page had before it reloaded
let forgetStream = false; // logged out: a reload brings the timeline back, not a point to resume from

function status(text, isError = false) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

// ---- login -----------------------------------------------------------------------------------------

function base64url(bytes) {
  return btoa(String.fromCharCode(...new Uint8Array(bytes)))
    .replace(/\+/g, "-")
    .replace(/\//g, "_")
    .replace(/=+$/, "");
}

function randomString(length) {
  return base64url(crypto.getRandomValues(new Uint8Array(length)));
}

async function challengeOf(verifier) {
  return base64url(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier)));
}

function redirectUri() {
  return location.origin + location.pathname;
}

/** Decode a JWT's payload without verifying it (VORA verifies; the console only shows what it says). */
function claimsOf(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const text = new TextDecoder().decode(Uint8Array.from(atob(part), (c) => c.charCodeAt(0)));
    return JSON.parse(text);
  } catch {
    return null;
  }
}

/** The tokens kept in this tab, expired or not (the token panel shows an expired one as expired). */
function savedTokens() {
  return JSON.parse(store.getItem("vora.tokens") || "null");
}

function tokens() {
  const saved = savedTokens();
  return saved && saved.expiresAt > Date.now() ? saved : null;
}

async function startLogin() {
  const verifier = randomString(48);
  const state = randomString(16);
  store.setItem("vora.pkce", JSON.stringify({ verifier, state }));
  const params = new URLSearchParams({
    client_id: config.clientId,
    response_type: "code",
    redirect_uri: redirectUri(),
    scope: config.scopes.join(" "),
    state,
    code_challenge: await challengeOf(verifier),
    code_challenge_method: "S256",
  });
  saveLog();
  location.assign(`${discovery.authorization_endpoint}?${params}`);
}

async function finishLogin(query) {
  const pending = JSON.parse(store.getItem("vora.pkce") || "null");
  store.removeItem("vora.pkce");
  history.replaceState(null, "", redirectUri());
  if (!discovery) throw new Error(`Login cannot finish: ${loginUnavailable}`);
  if (query.get("error")) {
    throw new Error(`Login failed: ${query.get("error")} ${query.get("error_description") || ""}`);
  }
  if (!pending || pending.state !== query.get("state")) {
    throw new Error("Login failed: the answer does not belong to a login this page started");
  }
  const response = await fetch(discovery.token_endpoint, {
    method: "POST",
    headers: { "Content-Type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({
      grant_type: "authorization_code",
      code: query.get("code"),
      redirect_uri: redirectUri(),
      client_id: config.clientId,
      code_verifier: pending.verifier,
    }),
  });
  const body = await response.json();
  if (!response.ok) {
    throw new Error(`The token request failed: ${body.error} ${body.error_description || ""}`);
  }
  store.setItem(
    "vora.tokens",
    JSON.stringify({
      access: body.access_token,
      id: body.id_token || null,
      expiresAt: Date.now() + body.expires_in * 1000,
    }),
  );
}

async function usePastedToken() {
  const access = $("paste-token").value.trim();
  const claims = claimsOf(access);
  if (!claims) throw new Error("That is not a JWT (three base64url parts separated by dots).");
  const expiresAt = typeof claims.exp === "number" ? claims.exp * 1000 : Date.now() + 3600_000;
  if (expiresAt <= Date.now()) throw new Error("That token has expired.");
  store.setItem("vora.tokens", JSON.stringify({ access, id: null, expiresAt }));
  $("paste-token").value = "";
  $("paste").open = false;
  await showLoggedIn();
}

// ---- REST (through the SDK where it has the call) ----------------------------------------------------

function accessToken() {
  const saved = tokens();
  // The SDK's refusal: a stream stops ("unauthorized") instead of retrying for a token only a new login brings.
  if (!saved) throw new sdk.VoraAccessTokenRefusedError("not logged in, or the token expired: log in again");
  return saved.access;
}

/** Call the development simulator endpoint (not the SDK's: it is the console's own, under /console/). */
async function simulatorCall(method, path, body) {
  const headers = { Authorization: `Bearer ${accessToken()}`, Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(`${config.apiBase}/console/simulator${path}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = text;
  }
  return { status: response.status, ok: response.ok, data };
}

// ---- the timeline ----------------------------------------------------------------------------------

function timeOf(date) {
  return date.toTimeString().slice(0, 8) + "." + String(date.getMilliseconds()).padStart(3, "0");
}

function scalarSummary(data) {
  if (data === null || typeof data !== "object") return data === undefined ? "" : String(data);
  return Object.entries(data)
    .filter(([, value]) => value === null || typeof value !== "object")
    .map(([key, value]) => `${key}=${value}`)
    .join(" ");
}

/** Record one entry: kind is event (a stream event), lifecycle (the channel and the SDK) or heartbeat. */
function record(kind, type, summary, detail, envelope = null) {
  const entry = {
    at: new Date(),
    kind,
    type,
    eventId: envelope && envelope.eventId ? envelope.eventId : null,
    sequenceNumber: envelope && envelope.sequenceNumber !== undefined ? envelope.sequenceNumber : null,
    summary,
    detail,
  };
  if (paused) {
    // A console paused for hours holds what a resume would keep, no more: the newest LOG_LIMIT rows.
    waiting.push(entry);
    const over = overflowing(waiting);
    if (over >= 0 && waiting.splice(over, 1)[0].kind !== "heartbeat") dropped += 1;
    showPause();
    return;
  }
  append(entry);
}

function heartbeatsIn(list) {
  let count = 0;
  for (const entry of list) if (entry.kind === "heartbeat") count += 1;
  return count;
}

/** The index of the oldest entry a list (oldest first) holds past its bounds, or -1: one push passes one at most. */
function overflowing(list) {
  const heartbeats = heartbeatsIn(list);
  if (heartbeats > HEARTBEAT_LIMIT) return list.findIndex((entry) => entry.kind === "heartbeat");
  if (list.length - heartbeats > LOG_LIMIT) return list.findIndex((entry) => entry.kind !== "heartbeat");
  return -1;
}

function append(entry) {
  entries.push(entry);
  const over = overflowing(entries);
  if (over >= 0) {
    const [gone] = entries.splice(over, 1);
    if (bodies.has(gone)) bodies.get(gone).remove();
  }
  addTypeOption(entry.type);
  const body = renderEntry(entry);
  bodies.set(entry, body);
  const table = $("log");
  table.insertBefore(body, table.tBodies[0] || null); // newest first
  applyFilter(body);
  showCount();
}

function renderEntry(entry) {
  const body = document.createElement("tbody");
  body.className = `entry ${entry.kind}`;
  body.dataset.kind = entry.kind;
  body.dataset.type = entry.type;
  if (entry.eventId) body.dataset.eventId = entry.eventId;
  const row = document.createElement("tr");
  row.className = "line";
  row.tabIndex = 0;
  row.title = "show the envelope";
  row.setAttribute("aria-expanded", "false"); // a disclosure: Enter or Space shows the envelope below
  const cells = [timeOf(entry.at), entry.type, entry.eventId || "", entry.sequenceNumber ?? "", entry.summary];
  for (const [index, text] of cells.entries()) {
    const cell = document.createElement("td");
    cell.textContent = String(text);
    cell.className = ["time", "type", "event-id", "seq", "summary"][index];
    row.append(cell);
  }
  const more = document.createElement("tr");
  more.className = "envelope";
  more.hidden = true;
  const cell = document.createElement("td");
  cell.colSpan = 5;
  const pre = document.createElement("pre");
  pre.textContent = JSON.stringify(entry.detail, null, 2);
  cell.append(pre);
  more.append(cell);
  const toggle = () => {
    more.hidden = !more.hidden;
    row.classList.toggle("open", !more.hidden);
    row.setAttribute("aria-expanded", String(!more.hidden));
  };
  row.addEventListener("click", toggle);
  row.addEventListener("keydown", (key) => {
    if (key.key === "Enter" || key.key === " ") {
      key.preventDefault();
      toggle();
    }
  });
  body.append(row, more);
  return body;
}

function addTypeOption(type) {
  const select = $("log-type");
  if ([...select.options].some((option) => option.value === type)) return;
  select.append(new Option(type, type));
}

function matches(body) {
  const type = $("log-type").value;
  const kind = body.dataset.kind;
  if (kind === "heartbeat" && !$("log-heartbeats").checked && type !== "heartbeat") return false;
  if (type === ":event" && kind !== "event") return false;
  if (type === ":lifecycle" && kind !== "lifecycle") return false;
  if (type && !type.startsWith(":") && body.dataset.type !== type) return false;
  const text = $("log-text").value.trim().toLowerCase();
  return !text || body.textContent.toLowerCase().includes(text);
}

function applyFilter(body) {
  body.hidden = !matches(body);
}

function applyFilters() {
  for (const body of $("log").tBodies) applyFilter(body);
  showCount();
}

let countPending = false;
function showCount() {
  // Once a frame at most: a replay after a resume can append hundreds of rows at once.
  if (countPending) return;
  countPending = true;
  requestAnimationFrame(() => {
    countPending = false;
    const shown = [...$("log").tBodies].filter((body) => !body.hidden).length;
    // Of the rows the filters choose from: heartbeats only when they can be shown.
    const heartbeatsShowable = $("log-heartbeats").checked || $("log-type").value === "heartbeat";
    const total = heartbeatsShowable ? entries.length : entries.length - heartbeatsIn(entries);
    $("log-count").textContent = `(${shown} shown of ${total})`;
  });
}

function showPause() {
  const older = dropped ? `; ${dropped} older dropped` : "";
  const rows = waiting.length - heartbeatsIn(waiting); // the heartbeats a resume brings are not worth counting
  $("log-pause").textContent = paused ? `Resume (${rows} waiting${older})` : "Pause";
  $("log-pause").title =
    paused && waiting.length ? `waiting: ${[...new Set(waiting.map((entry) => entry.type))].join(", ")}` : "";
  $("log-pause").classList.toggle("paused", paused);
}

function togglePause() {
  paused = !paused;
  if (!paused) {
    for (const entry of waiting.splice(0)) append(entry);
    const note = `${dropped} rows that arrived while paused were dropped: the timeline keeps the last ${LOG_LIMIT}`;
    if (dropped) lifecycle("console", note, { dropped });
    dropped = 0;
  }
  showPause();
}

function clearLog() {
  entries.splice(0);
  waiting.splice(0);
  dropped = 0;
  for (const body of [...$("log").tBodies]) body.remove();
  store.removeItem(LOG_KEY);
  showPause();
  showCount();
}

function asLine(entry) {
  const line = { time: entry.at.toISOString(), kind: entry.kind, type: entry.type };
  if (entry.eventId) line.eventId = entry.eventId;
  if (entry.sequenceNumber !== null) line.sequenceNumber = entry.sequenceNumber;
  return JSON.stringify({ ...line, summary: entry.summary, detail: entry.detail });
}

function exportLog() {
  const text = [...entries, ...waiting].map(asLine).join("\n") + "\n";
  const link = document.createElement("a");
  link.href = URL.createObjectURL(new Blob([text], { type: "application/x-ndjson" }));
  link.download = `vora-console-${new Date().toISOString().replace(/[:.]/g, "-")}.jsonl`;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
}

/** Keep the log across the login and logout redirects (the page reloads; the timeline must not). */
function saveLog() {
  const last =
    stream && stream.lastEventId ? { identity: stream.identity, lastEventId: stream.lastEventId } : resumePoint;
  if (last && !forgetStream) store.setItem(RESUME_KEY, JSON.stringify(last));
  const kept = [...entries, ...waiting].slice(-SAVED_LIMIT).map((entry) => ({ ...entry, at: entry.at.toISOString() }));
  try {
    store.setItem(LOG_KEY, JSON.stringify(kept));
  } catch {
    store.removeItem(LOG_KEY); // over the quota: better no copy than a broken one
  }
}

function restoreLog() {
  const saved = JSON.parse(store.getItem(LOG_KEY) || "[]");
  store.removeItem(LOG_KEY);
  resumePoint = JSON.parse(store.getItem(RESUME_KEY) || "null");
  store.removeItem(RESUME_KEY);
  for (const entry of saved) append({ ...entry, at: new Date(entry.at) });
}

// ---- the stream, through the SDK -------------------------------------------------------------------

function lifecycle(type, summary, detail) {
  record("lifecycle", type, summary, detail);
}

/** Wrap an SDK transport to show each connection's open and close (code, reason, handshake) on the timeline. */
function observed(transport) {
  return {
    name: transport.name,
    connectionType: transport.connectionType,
    available: () => transport.available(),
    open(target, sink) {
      const holder = { connection: null };
      const resumeFrom = target.lastEventId ? ` after ${target.lastEventId}` : "";
      lifecycle("connection", `${transport.name}: connecting${resumeFrom}`, {
        transport: transport.name,
        lastEventId: target.lastEventId ?? null,
      });
      holder.connection = transport.open(target, {
        onOpen: () => {
          liveConnection = holder.connection;
          lifecycle("connection", `${transport.name}: open${resumeFrom}`, { transport: transport.name, event: "open" });
          sink.onOpen();
          renderSession();
        },
        onMessage: (text) => sink.onMessage(text),
        onClose: (close) => {
          if (liveConnection === holder.connection) liveConnection = null;
          const handshake = close.handshake;
          const refused = handshake && handshake.status !== undefined ? `, refused ${handshake.status}` : "";
          const reason = close.reason ? ` "${close.reason}"` : "";
          const how = close.opened ? "closed" : "failed to open";
          lifecycle("connection", `${transport.name}: ${how} ${close.code}${reason}${refused}`, {
            transport: transport.name,
            event: "close",
            opened: close.opened,
            code: close.code,
            reason: close.reason,
            handshake: handshake
              ? {
                  status: handshake.status ?? null,
                  retryAfterSeconds: handshake.retryAfterSeconds ?? null,
                  statusVisible: handshake.statusVisible,
                  fromVora: handshake.fromVora,
                }
              : null,
          });
          sink.onClose(close);
          $("drop").disabled = true;
        },
      });
      return holder.connection;
    },
  };
}

function transportsFor(choice) {
  const all = { websocket: sdk.webSocketTransport(), sse: sdk.sseTransport() };
  const order = choice === "auto" ? ["websocket", "sse"] : [choice];
  return order.map((name) => observed(all[name]));
}

function pushChoice() {
  const platform = $("push-platform").value;
  const deviceToken = $("push-token").value.trim();
  return platform && deviceToken ? { platform, deviceToken } : undefined;
}

function openStream() {
  // One stream at a time: a second click while one lives changes nothing.
  if (stream && stream.state !== "closed") return;
  const identity = $("identity").value;
  if (!identity) {
    status("Choose an identity first.", true);
    return;
  }
  const holdUpMode = $("hold-up").checked;
  const push = holdUpMode ? pushChoice() : undefined;
  const previous = stream;
  streamOptions = { identity, transport: transportsFor($("transport").value), holdUpMode };
  if (push) streamOptions.push = push;
  if (storedSubscription && !storedSubscription.subscribeAll && storedSubscription.identity === identity) {
    // The SDK applies options.subscription after every setup of this stream.
    streamOptions.subscription = { subscribeAll: false, events: storedSubscription.events };
  }
  // The last stream of this identity, or the one the page had before the login redirect (or a reload).
  const last = previous || resumePoint;
  if ($("resume").checked && last && last.identity === identity && last.lastEventId) {
    streamOptions.lastEventId = last.lastEventId;
  }
  const current = client.stream(streamOptions);
  stream = current;
  forgetStream = false;
  const mine = (listener) => (value) => {
    if (stream === current) listener(value);
  };
  current.on(
    "state",
    mine((change) => {
      lifecycle("state", `${change.from} → ${change.to} (${change.cause}) on ${change.transport}`, change);
      renderSession();
      refreshServerView();
    }),
  );
  current.on(
    "setup",
    mine((info) => {
      const subscription = streamOptions.subscription || { subscribeAll: true };
      storedSubscription = { identity: info.identity, ...subscription };
      lifecycle(
        "setup",
        `session set up on ${info.identity}` +
          (subscription.subscribeAll
            ? ", subscribed to every event"
            : `, subscribed to ${subscription.events.join(", ") || "nothing"}`),
        {
          identity: info.identity,
          connectionType: CONNECTION_TYPES[current.transport],
          holdUpMode,
          push: push ?? null,
          subscription,
        },
      );
      showSubscription();
      renderSession();
    }),
  );
  current.on(
    "reconnecting",
    mine((info) => {
      const again = info.setup ? ", setting the session up again" : "";
      lifecycle(
        "reconnecting",
        `attempt ${info.attempt + 1} in ${(info.delayMs / 1000).toFixed(2)} s after ${info.cause}${again} (${info.transport})`,
        info,
      );
    }),
  );
  current.on(
    "fallback",
    mine((info) => {
      lifecycle("fallback", `${info.from} → ${info.to} after ${info.failures} failed opens`, info);
      renderSession();
    }),
  );
  current.on(
    "closed",
    mine((info) => {
      lifecycle("closed", `stream closed: ${info.reason} (${info.detail})`, {
        reason: info.reason,
        detail: info.detail,
      });
      const again = info.reason === "unauthorized" ? " Log in again (or paste a fresh token)." : "";
      if (info.reason === "unauthorized") offerLogin();
      status(`The stream closed: ${info.reason}.${again}`, info.reason !== "client" && info.reason !== "logout");
      renderSession();
    }),
  );
  current.on(
    "error",
    mine((error) => {
      lifecycle("error", error instanceof Error ? `${error.name}: ${error.message}` : String(error), {
        name: error && error.name,
        message: error instanceof Error ? error.message : String(error),
      });
    }),
  );
  current.on(
    "event",
    mine((event) => {
      record("event", event.type, scalarSummary(event.data), event, event);
      $("last-event-id").textContent = event.eventId;
    }),
  );
  current.on(
    "channelTerminated",
    mine((message) => {
      const data = message.data || {};
      record(
        "lifecycle",
        "channelTerminated",
        `reason ${data.reason}${data.message ? `: ${data.message}` : ""}`,
        message,
        message,
      );
    }),
  );
  current.on(
    "resumeGap",
    mine((message) => record("lifecycle", "resumeGap", scalarSummary(message.data), message, message)),
  );
  current.on(
    "heartbeat",
    mine((message) => record("heartbeat", "heartbeat", scalarSummary(message.data), message, message)),
  );
  lifecycle("console", `opening ${identity} (transport ${$("transport").value}${holdUpMode ? ", holdUpMode" : ""})`, {
    identity,
    transport: $("transport").value,
    holdUpMode,
    push: push ?? null,
    lastEventId: streamOptions.lastEventId ?? null,
  });
  renderSession();
}

function dropConnection() {
  // 4008 is a drop about this client alone: the SDK resumes within a second (1006 would wait up to the reconnect window the server announced).
  if (liveConnection) liveConnection.close(4008, "dropped by the console");
}

function closeStream() {
  if (stream) stream.close();
}

function renderSession() {
  const live = stream && stream.state !== "closed";
  $("open").disabled = Boolean(live) || !$("identity").value;
  $("close").disabled = !live;
  $("drop").disabled = !(live && stream.state === "open" && liveConnection);
  for (const id of ["identity", "transport", "hold-up", "push-platform", "push-token", "load-identities"])
    $(id).disabled = Boolean(live);
  $("subscribe").disabled = !(live && storedSubscription);
  $("sim-publish").disabled = !$("identity").value;
  $("state").textContent = stream ? stream.state : "closed";
  $("state").className = `state-${stream ? stream.state : "closed"}`;
  $("fact-identity").textContent = stream ? stream.identity : "–";
  $("fact-transport").textContent = live ? stream.transport : "–";
  $("fact-connection-type").textContent = live ? CONNECTION_TYPES[stream.transport] || stream.transport : "–";
  $("fact-hold-up").textContent = streamOptions && live ? String(Boolean(streamOptions.holdUpMode)) : "–";
  $("fact-push").textContent =
    streamOptions && live && streamOptions.push
      ? `${streamOptions.push.platform} (${streamOptions.push.deviceToken.length}-character token)`
      : live
        ? "none"
        : "–";
  $("fact-subscription").textContent =
    live && storedSubscription
      ? storedSubscription.subscribeAll
        ? "subscribeAll"
        : storedSubscription.events.join(", ") || "nothing"
      : "–";
  $("last-event-id").textContent = (stream && stream.lastEventId) || "none";
}

// ---- subscription ----------------------------------------------------------------------------------

function showSubscription() {
  const all = !storedSubscription || storedSubscription.subscribeAll;
  $("subscribe-all").checked = all;
  for (const box of document.querySelectorAll("input[name=event-type]")) {
    box.checked = all || storedSubscription.events.includes(box.value);
    box.disabled = all;
  }
}

async function subscribe() {
  const identity = stream.identity;
  const all = $("subscribe-all").checked;
  const events = [...document.querySelectorAll("input[name=event-type]:checked")].map((box) => box.value);
  const subscription = all ? { subscribeAll: true } : { subscribeAll: false, events };
  // Applied now, and by the SDK after every later setup of this stream (tokenExpired, replaced, disconnected).
  await stream.subscribe(subscription);
  storedSubscription = { identity, ...subscription };
  if (all) delete streamOptions.subscription;
  else streamOptions.subscription = subscription; // what setup rows show
  lifecycle(
    "subscription",
    all ? "subscribed to every event" : `subscribed to ${events.join(", ") || "nothing"}`,
    subscription,
  );
  status(all ? "Subscribed to every event." : `Subscribed to ${events.join(", ") || "nothing"}.`);
  showSubscription();
  renderSession();
  refreshServerView();
}

// ---- simulator (development only) ------------------------------------------------------------------

async function loadSimulator() {
  const answer = await simulatorCall("GET", "");
  if (answer.status !== 200 || !answer.data || !answer.data.templates) {
    simulator = null;
    $("simulator-panel").hidden = true;
    $("simulator-panel").dataset.simulator = "off";
    $("server-view").hidden = true;
    return;
  }
  simulator = answer.data.templates;
  $("sim-type").replaceChildren(...Object.keys(simulator).map((type) => new Option(type, type)));
  showTemplate();
  $("simulator-panel").hidden = false;
  $("simulator-panel").dataset.simulator = "on";
  $("server-view").hidden = false;
  await refreshServerView();
}

function showTemplate() {
  const template = simulator[$("sim-type").value];
  $("sim-data").value = JSON.stringify(template ?? {}, null, 2);
}

async function publish() {
  const identity = $("identity").value;
  let data;
  try {
    data = JSON.parse($("sim-data").value);
  } catch (error) {
    $("sim-result").textContent = `The data is not JSON: ${error.message}`;
    $("sim-result").className = "error";
    return;
  }
  const type = $("sim-type").value;
  const answer = await simulatorCall("POST", `/${encodeURIComponent(identity)}/events`, { type, data });
  if (answer.ok) {
    $("sim-result").textContent =
      `Published ${answer.data.type} ${answer.data.eventId} (sequenceNumber ${answer.data.sequenceNumber}).`;
    $("sim-result").className = "";
  } else {
    $("sim-result").textContent = `${answer.status}: ${(answer.data && answer.data.message) || answer.data}`;
    $("sim-result").className = "error";
  }
  await refreshServerView();
}

let refreshing = null;
async function refreshServerView() {
  if (!simulator || !$("identity").value) return;
  if (refreshing) return;
  refreshing = (async () => {
    const identity = $("identity").value;
    const answer = await simulatorCall("GET", `/${encodeURIComponent(identity)}`);
    if (!answer.ok) {
      $("server-online").textContent = `${answer.status}: ${(answer.data && answer.data.message) || ""}`;
      return;
    }
    const { online, sessions } = answer.data;
    $("server-online").textContent = `${identity} is ${online ? "online" : "offline"}; ${sessions.length} session(s).`;
    $("server-sessions").replaceChildren(
      ...sessions.map((session) => {
        const item = document.createElement("li");
        const subscription = session.subscription || {};
        const what = subscription.subscribeAll ? "subscribeAll" : (subscription.events || []).join(", ") || "nothing";
        item.textContent =
          `${session.connectionType}, holdUpMode ${session.holdUpMode}, ${session.sockets} socket(s), ` +
          `subscription: ${what}, by ${session.user}, since ${session.createdAt}`;
        item.dataset.sessionId = session.sessionId || "";
        return item;
      }),
    );
  })()
    .catch((error) => {
      $("server-online").textContent = error.message;
    })
    .finally(() => {
      refreshing = null;
    });
  await refreshing;
}

// ---- token, identities, logout ---------------------------------------------------------------------

let expiryTimer = null;
let expiryTold = null; // the token whose expiry the status line has announced

function showToken() {
  clearTimeout(expiryTimer);
  const saved = $("app").hidden ? null : savedTokens(); // logged out: nothing to show
  const claims = saved ? claimsOf(saved.access) : null;
  if (!claims) {
    for (const id of ["token-sub", "token-scopes", "token-exp"]) $(id).textContent = "–";
    $("token-exp").className = "";
    return;
  }
  $("who").textContent = `signed in as ${claims.sub}`;
  $("token-sub").textContent = claims.sub ?? "(none)";
  const scopes = typeof claims.scope === "string" ? claims.scope.split(" ") : claims.scp || claims.scopes || [];
  $("token-scopes").textContent = [].concat(scopes).join(" ") || "(none)";
  // When the console stops using it: the token's exp claim, or the provider's expires_in if that came first.
  const hasExp = typeof claims.exp === "number";
  const expiresAt = hasExp ? Math.min(claims.exp * 1000, saved.expiresAt) : saved.expiresAt;
  const left = Math.ceil((expiresAt - Date.now()) / 1000);
  const when = new Date(expiresAt).toLocaleTimeString();
  const until = left > 0 ? `${when} (in ${Math.floor(left / 60)} min ${left % 60} s)` : `${when} (expired)`;
  $("token-exp").textContent = hasExp ? until : `(no exp claim) the console uses it until ${until}`;
  $("token-exp").className = left <= 0 ? "error" : left < 300 ? "warning" : "";
  if (left > 0) {
    expiryTimer = setTimeout(showToken, Math.min(expiresAt - Date.now() + 50, 2 ** 31 - 1)); // told at once, not up to 15 s late
  } else if (expiryTold !== saved.access) {
    expiryTold = saved.access;
    offerLogin();
    status(
      `The access token expired at ${when}: log in again (or paste a fresh token). ` +
        "An open stream carries on until its session ends, then stops (it cannot set up again).",
      true,
    );
  }
}

async function loadIdentities() {
  const identities = await client.identities();
  const previous = $("identity").value || (resumePoint ? resumePoint.identity : "");
  $("identity").replaceChildren(...identities.map((identity) => new Option(identity, identity)));
  if (identities.includes(previous)) $("identity").value = previous;
  status(identities.length ? `You own ${identities.length} identities.` : "You own no identities.");
  renderSession();
  await refreshServerView();
}

/**
 * The token ran out (or VORA refused it) while the console stays open: offer Log in and the paste box beside Log out,
 * which the status line asks for. A pasted token is used at once, and the open stream carries on; Log in leaves
 * the page and comes back, and "Set up and open" then resumes after the last eventId.
 */
function offerLogin() {
  if ($("app").hidden) return;
  $("login").hidden = !discovery;
  $("paste").hidden = false;
  if (!discovery) $("paste").open = true;
}

function showLoggedOut(message, isError = false) {
  $("login-panel").classList.remove("signed-in");
  $("app").hidden = true;
  $("logout").hidden = true;
  $("login").hidden = !discovery;
  $("paste").hidden = false;
  $("who").textContent = "";
  status(message, isError);
  showToken();
}

async function showLoggedIn() {
  $("login-panel").classList.add("signed-in");
  $("app").hidden = false;
  $("login").hidden = true;
  $("logout").hidden = false;
  $("paste").hidden = true;
  showToken();
  status("Logged in.");
  client = new sdk.VoraClient({ baseUrl: location.origin + config.apiBase, accessToken: accessToken });
  const spec = await (await fetch(`${config.apiBase}/openapi.json`)).json();
  eventTypes = spec.components.schemas.EventType.enum;
  $("event-types").replaceChildren(
    ...eventTypes.map((type) => {
      const label = document.createElement("label");
      const box = document.createElement("input");
      box.type = "checkbox";
      box.value = type;
      box.name = "event-type";
      label.append(box, ` ${type}`);
      return label;
    }),
  );
  showSubscription();
  // Set up needs nothing clicked first: the identities are listed at once.
  await loadIdentities();
  await loadSimulator();
}

function streamClosed(timeoutMs) {
  if (!stream || stream.state === "closed") return Promise.resolve();
  return Promise.race([stream.closed, new Promise((resolve) => setTimeout(resolve, timeoutMs))]);
}

async function logOut() {
  const current = stream;
  const identity = current ? current.identity : $("identity").value;
  let unheard = null; // why VORA did not hear the logout (offline, down, the token expired)
  let stoppedHere = false;
  if (identity && current && current.state !== "closed") {
    // VORA ends the session everywhere: an open stream receives channelTerminated(logout) and the SDK stops.
    lifecycle("console", `logging out of ${identity}`, { identity });
    // A stream that is (or falls to) reconnecting can receive nothing: it stops here at once, or it would try again
    // through the logout and set a session up again after it.
    const stopIfNotOpen = () => {
      if (current.state !== "connecting" && current.state !== "reconnecting") return;
      stoppedHere = true;
      queueMicrotask(() => current.close()); // not inside the SDK's own state event
    };
    const unsubscribe = current.on("state", stopIfNotOpen);
    stopIfNotOpen();
    try {
      await client.logout(identity);
      await streamClosed(5000);
    } catch (error) {
      unheard = error.message;
      lifecycle("error", `logout failed: ${error.message}`, { message: error.message });
    } finally {
      unsubscribe();
    }
  }
  if (current) current.close();
  forgetStream = true;
  resumePoint = null;
  const ended = current && current.closeInfo ? current.closeInfo.reason : null;
  const saved = JSON.parse(store.getItem("vora.tokens") || "null");
  store.removeItem("vora.tokens");
  // The login ends here whatever VORA answered; an unheard logout leaves the session stored there, and says so.
  const farewell = unheard
    ? `Logged out here, but VORA did not hear it (${unheard}): the session of ${identity} stays stored there ` +
      "until it expires (VORA_SESSION_TTL), and a push registration with it."
    : stoppedHere
      ? "Logged out (the stream was reconnecting: it stopped here, and VORA ended the session)."
      : ended
        ? `Logged out (the stream ended: ${ended}).`
        : "Logged out.";
  lifecycle("console", farewell, { ended, unheard });
  if (discovery && discovery.end_session_endpoint && saved && saved.id) {
    store.setItem("vora.farewell", JSON.stringify({ text: farewell, isError: Boolean(unheard) }));
    saveLog(); // the provider's logout reloads the page: the timeline comes back with it
    location.assign(
      `${discovery.end_session_endpoint}?${new URLSearchParams({
        id_token_hint: saved.id,
        post_logout_redirect_uri: redirectUri(),
        client_id: config.clientId,
      })}`,
    );
  } else {
    showLoggedOut(farewell, Boolean(unheard));
  }
}

// ---- start -----------------------------------------------------------------------------------------

function guarded(action) {
  return () =>
    Promise.resolve()
      .then(action)
      .catch((error) => status(error.message, true));
}

async function start() {
  config = await (await fetch("config.json")).json();
  try {
    sdk = await import("./sdk/vora-client.js");
  } catch (error) {
    status(`The SDK bundle did not load (${error.message}): \`make sdk\` builds it (docs/console.md).`, true);
    return;
  }
  restoreLog();
  if (config.issuer) {
    const where = `${config.issuer.replace(/\/$/, "")}/.well-known/openid-configuration`;
    try {
      const answer = await fetch(where, { signal: AbortSignal.timeout(10_000) });
      if (!answer.ok) throw new Error(`${answer.status} ${answer.statusText}`.trim());
      discovery = await answer.json();
      $("login-help").textContent =
        `The console calls VORA as you, with a user access token: "Log in" gets one from ${config.issuer} ` +
        "(authorization code with PKCE; `make run`'s user is demo, password demo).";
    } catch (error) {
      // The provider is down or unreachable: pasting a token still works, and the page says why Log in is off.
      loginUnavailable =
        `the authorization server ${config.issuer} did not answer (${where}: ${error.message}); ` +
        "paste an access token, or reload once it answers";
      $("login-help").textContent = `Log in is unavailable: ${loginUnavailable}.`;
      $("paste").open = true;
    }
  } else {
    $("login-help").textContent =
      "No authorization server is configured (VORA_OAUTH_ISSUER is not a URL): paste an access token.";
    $("paste").open = true;
  }
  $("login").onclick = guarded(startLogin);
  $("logout").onclick = guarded(logOut);
  $("use-token").onclick = guarded(usePastedToken);
  $("load-identities").onclick = guarded(loadIdentities);
  $("identity").onchange = guarded(async () => {
    renderSession();
    await refreshServerView();
  });
  $("open").onclick = guarded(openStream);
  $("drop").onclick = guarded(dropConnection);
  $("close").onclick = guarded(closeStream);
  $("subscribe").onclick = guarded(subscribe);
  $("subscribe-all").onchange = () => {
    for (const box of document.querySelectorAll("input[name=event-type]")) {
      box.disabled = $("subscribe-all").checked;
      if ($("subscribe-all").checked) box.checked = true;
    }
  };
  $("sim-type").onchange = showTemplate;
  $("sim-publish").onclick = guarded(publish);
  $("server-refresh").onclick = guarded(refreshServerView);
  $("log-type").onchange = applyFilters;
  $("log-text").oninput = applyFilters;
  $("log-heartbeats").onchange = applyFilters;
  $("log-pause").onclick = togglePause;
  $("log-clear").onclick = clearLog;
  $("log-export").onclick = exportLog;
  setInterval(showToken, 15_000);
  // A reload (VORA restarted, the page edited) keeps the timeline too; Clear empties it for good.
  window.addEventListener("pagehide", saveLog);
  const query = new URLSearchParams(location.search);
  if (query.has("code") || query.has("error")) await finishLogin(query);
  if (tokens()) {
    await showLoggedIn();
  } else {
    const farewell = JSON.parse(store.getItem("vora.farewell") || "null");
    store.removeItem("vora.farewell");
    if (loginUnavailable)
      showLoggedOut(`${farewell ? `${farewell.text} ` : ""}Log in is unavailable: ${loginUnavailable}.`, true);
    else if (farewell) showLoggedOut(farewell.text, farewell.isError);
    else showLoggedOut("Log in to use the console.");
  }
}

start().catch((error) => status(error.message, true));
