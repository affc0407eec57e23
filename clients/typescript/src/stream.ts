import type { VoraClient } from "./client.js";
import { Emitter } from "./emitter.js";
import {
  VoraAccessTokenProviderError,
  VoraApiError,
  VoraError,
  VoraForbiddenError,
  VoraNetworkError,
  VoraNotFoundError,
  VoraUnauthorizedError,
} from "./errors.js";
import { compareEventIds, isEventId } from "./event-id.js";
import type { ChannelOpenedEvent, ChannelTerminatedEvent, HeartbeatEvent, ResumeGapEvent } from "./generated/events.js";
import { DEFAULT_RULES, afterDrop, afterRefusal, afterTermination, refusedDelayMs } from "./reconnect.js";
import type { NextStep, ReconnectRules } from "./reconnect.js";
import { sseTransport } from "./sse-transport.js";
import type { FetchLike } from "./sse-transport.js";
import type { HandshakeFailure, Transport, TransportClose, TransportConnection } from "./transport.js";
import type {
  ChannelMessage,
  PushRegistration,
  SetupResponse,
  StreamGap,
  StreamItem,
  Subscription,
  TerminationReason,
  VoraEvent,
} from "./types.js";
import { webSocketTransport } from "./websocket-transport.js";

/** The stream's states; `closed` is final. */
export type StreamState = "connecting" | "open" | "reconnecting" | "closed";

/** Why a stream closed. */
export type CloseReason =
  | "client" // the app called close()
  | "logout" // channelTerminated logout: the session was logged out
  | "revoked" // channelTerminated revoked: the identity was taken from the user
  | "replaced" // channelTerminated replaced more often than maxReplacedSetups allows: another copy of the app wants the session
  | "unauthorized" // setup refused the access token (401) even after asking the provider for a fresh one, or the provider threw VoraAccessTokenRefusedError
  | "forbidden" // setup refused the identity or scopes (403)
  | "error"; // anything else no retry can fix (404, 409, a 400 handshake, a transport missing)

/** Every transition, with its cause. */
export interface StateChange {
  from: StreamState;
  to: StreamState;
  cause: string;
  /** The transport in use: the one open, or the one the next attempt uses ("websocket", "sse"). */
  transport: string;
}

/** The stream moved to the next transport for the rest of its life. */
export interface FallbackInfo {
  from: string;
  to: string;
  /** Failed opens in a row that could not pass on the transport left behind, the retry made right after the probe opened included. */
  failures: number;
}

export interface ReconnectingInfo {
  /**
   * Attempts since the last stable socket (0: the first after a drop; then 1, 2, ... whether refused or dropped again
   * before stable); a refused attempt n waits up to 2**n s (rule 9).
   */
  attempt: number;
  delayMs: number;
  cause: string;
  /** Whether the session is set up again before connecting. */
  setup: boolean;
  /** The transport the next attempt uses. */
  transport: string;
}

export interface ClosedInfo {
  reason: CloseReason;
  detail: string;
  error: unknown;
}

/** What a stream emits; listen with stream.on(name, listener). */
export interface StreamEvents {
  state: StateChange;
  connecting: { transport: string };
  open: { transport: string; lastEventId: string | undefined };
  reconnecting: ReconnectingInfo;
  /**
   * "auto" (or a list) moved to the next transport for good: the current one could not pass, the next one opened,
   * and the current one could not pass again right after.
   */
  fallback: FallbackInfo;
  closed: ClosedInfo;
  /** A stream event (call, presence, recording), in order, each once. */
  event: VoraEvent;
  /**
   * Events after lastEventId were no longer retained (VORA's), or the lastEventId given was one VORA refuses and the
   * stream started live (the SDK's own, `data.local` true): refresh the app's state.
   */
  resumeGap: StreamGap;
  heartbeat: HeartbeatEvent;
  /** A connection's first message: the position its delivery starts after, taken as lastEventId. */
  channelOpened: ChannelOpenedEvent;
  channelTerminated: ChannelTerminatedEvent;
  /** A new session was set up (at start, and after replaced, tokenExpired, disconnected or a 401). */
  setup: { identity: string };
  /** A failed attempt or a listener that threw (an error listener's own throw is dropped); the stream carries on. */
  error: unknown;
}

/** Where the app keeps the last eventId across restarts. */
export interface LastEventIdStore {
  load(): string | undefined | Promise<string | undefined>;
  save(eventId: string): void | Promise<void>;
}

/**
 * Which transport to use: "auto" is WebSocket, then Server-Sent Events when the upgrade cannot pass; "websocket"
 * and "sse" force one; a list of transports is tried in its order by the same fallback rule.
 */
export type TransportChoice = "auto" | "websocket" | "sse" | readonly Transport[];

export interface StreamOptions {
  identity: string;
  holdUpMode?: boolean;
  push?: PushRegistration;
  /** Applied after every setup (a new session starts subscribed to everything). */
  subscription?: Subscription;
  /**
   * A session the app set up itself (client.setupSession); the stream still sets up anew when it ends. Pass its
   * answer's lastEventId as lastEventId when the app has no position of its own, as the stream's own setups do.
   */
  webSocketToken?: string;
  /** Resume after this eventId (else what lastEventIdStore loads). */
  lastEventId?: string;
  lastEventIdStore?: LastEventIdStore;
  transport?: TransportChoice;
  /**
   * Failed opens in a row that could not pass (no HTTP answer, an error or timeout before open, a refusal not in
   * VORA's error shape, or VORA's 400/426 for an upgrade that lost its headers) before "auto" or a list probes
   * the next transport in the same attempt (default 2). When the probe opens, the current transport is tried
   * once more at once (VORA may have been away, behind a proxy's 502, rather than the path blocking it): only
   * if that could not pass either, and the next transport opens again, does the stream move to it, for good.
   * A server that is down fails the probe, and is no fallback. VORA's own refusals (401, 403, 404, 429,
   * 503 in its error shape) never count, where the platform shows them; a browser's WebSocket shows nothing,
   * so there every failed open counts.
   */
  fallbackAfter?: number;
  /**
   * Setups after channelTerminated `replaced` allowed within replacedWindowMs (default 1). One more `replaced`
   * in the window closes the stream with reason "replaced": two copies of the app past the server's session
   * limit would otherwise evict each other forever. A session set up and refused (401, where the platform shows
   * it) at its first open counts as a `replaced` too: a newer one ended it before any stream could carry the notice.
   * Infinity restores "always set up again".
   */
  maxReplacedSetups?: number;
  /** The window of maxReplacedSetups (default 60 s: twice the backoff cap, so a slow carousel is still seen). */
  replacedWindowMs?: number;
  /**
   * No message for this long means the connection is dead; default twice the heartbeat interval plus 5 s. Measured by
   * the timers and by the wall clock (a device that slept stopped the timers' clock): docs/clients.md, network changes
   * and sleep.
   */
  heartbeatTimeoutMs?: number;
  /** Override the README's reconnect numbers (tests do). */
  rules?: Partial<ReconnectRules>;
}

const DEFAULT_HEARTBEAT_SECONDS = 30;
const DEFAULT_MAX_REPLACED_SETUPS = 1;
const DEFAULT_REPLACED_WINDOW_MS = 60_000;
const HEARTBEAT_GRACE_MS = 5_000;
const CLOSE_NORMAL = 1000;
const CLOSE_DEAD = 4000; // application code: the client gave up on a silent connection
const CLOSE_CUT = 1006;

/** The transitions allowed, in one place. */
const TRANSITIONS: Record<StreamState, readonly StreamState[]> = {
  connecting: ["open", "reconnecting", "closed"],
  open: ["reconnecting", "closed"],
  reconnecting: ["open", "reconnecting", "closed"],
  closed: [],
};

// The SSE transport reads with the client's fetch when the app injected one (a proxied fetch on Node): the stream
// then takes the path the REST calls take.
function chooseTransports(choice: TransportChoice | undefined, fetch: FetchLike | undefined): readonly Transport[] {
  if (Array.isArray(choice)) return choice as readonly Transport[];
  const sse = () => sseTransport(fetch === undefined ? {} : { fetch });
  switch (choice ?? "auto") {
    case "auto":
      return [webSocketTransport(), sse()];
    case "websocket":
      return [webSocketTransport()];
    case "sse":
      return [sse()];
    default:
      throw new VoraError(
        `unknown transport ${JSON.stringify(choice)}: use "auto", "websocket", "sse" or a list of transports`,
      );
  }
}

// VORA answers 400 or 426 (in its error shape) to a GET on /vora/ws whose upgrade headers a proxy removed.
const UPGRADE_LOST = new Set([400, 426]);

/** Tell whether a failed open says the transport cannot pass here, rather than that VORA refused it. */
export function couldNotPass(handshake: HandshakeFailure | undefined): boolean {
  if (handshake === undefined) return true; // the connect timeout: nothing answered
  if (!handshake.statusVisible || handshake.status === undefined) return true; // unseen, or no HTTP answer
  if (!handshake.fromVora) return true; // a proxy or appliance refused it, not VORA
  return UPGRADE_LOST.has(handshake.status);
}

/**
 * A probe of the next transport, made in the attempt whose failure reached fallbackAfter: what the attempts
 * counted, what to do if it fails, and its stage. "probe": the next transport's first open, which only shows
 * that VORA answers now; "confirm": the current transport once more right after, since VORA may have been away
 * (restarting behind a proxy's 502) rather than the path blocking it; "commit": the next transport again, after
 * the confirming retry could not pass either, whose opening moves the stream for good.
 */
interface Probe {
  failures: number;
  step: NextStep;
  attempt: number;
  stage: "probe" | "confirm" | "commit";
}

function isChannelMessage(value: unknown): value is ChannelMessage {
  if (typeof value !== "object" || value === null) return false;
  const record = value as Record<string, unknown>;
  return typeof record["type"] === "string" && typeof record["data"] === "object" && record["data"] !== null;
}

/**
 * One identity's event stream, held open by VORA's rules: it sets the session up, connects, resumes
 * after drops with the last eventId, sets up again when the session ends under it, and stops after
 * logout or revocation. Deliveries are in order, each once, to listeners and async iterators.
 */
export class VoraStream implements AsyncIterable<StreamItem> {
  readonly identity: string;
  #state: StreamState = "connecting";
  #closed: ClosedInfo | undefined;
  readonly #client: VoraClient;
  readonly #options: StreamOptions;
  readonly #rules: ReconnectRules;
  readonly #transports: readonly Transport[];
  readonly #emitter: Emitter<StreamEvents>;
  readonly #iterators = new Set<{ push(item: StreamItem | undefined): void }>();
  #transportIndex = 0;
  #failedOpens = 0;
  #token: string | undefined;
  #lastEventId: string | undefined;
  /**
   * The number the next scheduled attempt takes: 0 after a stable socket, one more for each attempt scheduled since
   * (a drop's, a refusal's, a termination's alike). A refusal's is at least 1, so the first refusal after a drop
   * backs off as refused attempt 1, not 2.
   */
  #attempt = 0;
  #unexplained = 0;
  #generation = 0;
  #connection: TransportConnection | undefined;
  #terminated: TerminationReason | undefined;
  #replacedAt: number[] = [];
  /** The token comes from a setup whose stream has not opened yet. */
  #setUpNotOpened = false;
  /** Where setup said the session's first connection starts: opens send it while the stream has no position. */
  #setupStart: string | undefined;
  #subscription: Subscription | undefined;
  /**
   * A session set up for this stream whose subscription has not gone through yet (a cut connection, a 503): the next
   * attempt subscribes on it again rather than setting up another, which would leave this one to count toward the
   * user's cap on the identity and, past it, evict the user's oldest session (another of their devices).
   */
  #unsubscribed: SetupResponse | undefined;
  #heartbeatMs: number;
  #reconnectWindowMs: number | undefined;
  #timers = new Set<ReturnType<typeof setTimeout>>();
  #watchdog: ReturnType<typeof setTimeout> | undefined;
  /** The attempt a reconnecting stream waits for: `online` may bring it forward, never before notBefore (Retry-After). */
  #pending: { timer: ReturnType<typeof setTimeout>; setup: boolean; notBefore: number } | undefined;
  /** When the current connection's last message (or its open) came, by the wall clock (rules.wallClock). */
  #lastFrameAt = 0;
  /** Removes the browser listeners (online, offline, visibility, resume, pageshow); set while the stream runs. */
  #stopListening: (() => void) | undefined;
  #closedPromise: Promise<ClosedInfo>;
  #resolveClosed!: (info: ClosedInfo) => void;

  constructor(client: VoraClient, options: StreamOptions) {
    this.#client = client;
    this.#options = options;
    this.identity = options.identity;
    this.#subscription = options.subscription;
    this.#rules = { ...DEFAULT_RULES, ...options.rules };
    // A listener that threw is reported as an error, unless it was an error listener: fed back to it, it would
    // throw again, without end (the stack overflow then escaped from the transport's event handler).
    this.#emitter = new Emitter<StreamEvents>((error, name) => {
      if (name !== "error") this.#emitter.emit("error", error);
    });
    this.#heartbeatMs = options.heartbeatTimeoutMs ?? DEFAULT_HEARTBEAT_SECONDS * 2000 + HEARTBEAT_GRACE_MS;
    this.#closedPromise = new Promise((resolve) => (this.#resolveClosed = resolve));
    let transports: readonly Transport[] = [];
    try {
      transports = chooseTransports(options.transport, client.injectedFetch).filter((transport) =>
        transport.available(),
      );
    } catch (error) {
      this.#transports = [];
      queueMicrotask(() => this.#finish("error", error instanceof Error ? error.message : String(error), error));
      return;
    }
    this.#transports = transports;
    if (transports.length === 0) {
      queueMicrotask(() =>
        this.#finish(
          "error",
          "no transport can run here: on Node 20 inject `ws` or run node with --experimental-websocket",
          undefined,
        ),
      );
      return;
    }
    queueMicrotask(() => void this.#start());
  }

  /** The current state. */
  get state(): StreamState {
    return this.#state;
  }

  /** The eventId of the last event delivered, or where the connection started (pass it as lastEventId to resume elsewhere). */
  get lastEventId(): string | undefined {
    return this.#lastEventId;
  }

  /** Why the stream closed, once it has. */
  get closeInfo(): ClosedInfo | undefined {
    return this.#closed;
  }

  /**
   * The reconnect window W the server last announced to this stream (`reconnectWindowSeconds` of a channelOpened or
   * heartbeat, in ms; kept across reconnects), which bounds the first delay after a crowd drop; undefined until one
   * arrives (an older server), when `rules.massDropWindowMs` (20 s) bounds it instead.
   */
  get reconnectWindowMs(): number | undefined {
    return this.#reconnectWindowMs;
  }

  /** The transport in use (or next to be tried). */
  get transport(): string {
    return this.#transports[this.#transportIndex]?.name ?? "none";
  }

  /** Resolves when the stream is closed, with why. */
  get closed(): Promise<ClosedInfo> {
    return this.#closedPromise;
  }

  /** Listen to one kind of stream event; returns a function that stops listening. */
  on<K extends keyof StreamEvents>(name: K, listener: (value: StreamEvents[K]) => void): () => void {
    return this.#emitter.on(name, listener);
  }

  /** Stop a listener. */
  off<K extends keyof StreamEvents>(name: K, listener: (value: StreamEvents[K]) => void): void {
    this.#emitter.off(name, listener);
  }

  /** Resolve the next time the stream is open (at once if it is); reject if it closes first. */
  opened(): Promise<void> {
    if (this.#state === "open") return Promise.resolve();
    const closed = this.#closed;
    if (closed !== undefined)
      return Promise.reject(new VoraError(`the stream closed: ${closed.reason} (${closed.detail})`));
    return new Promise((resolve, reject) => {
      const stopOpen = this.on("open", () => {
        stopOpen();
        stopClosed();
        resolve();
      });
      const stopClosed = this.on("closed", (info) => {
        stopOpen();
        stopClosed();
        reject(new VoraError(`the stream closed: ${info.reason} (${info.detail})`));
      });
    });
  }

  /**
   * Change what the stream's sessions receive: now, when a session is up (a VoraApiError if VORA refuses), and
   * after every later setup.
   */
  async subscribe(subscription: Subscription): Promise<void> {
    this.#subscription = subscription;
    if (this.#token !== undefined && !this.#isClosed()) await this.#client.subscribe(this.identity, subscription);
  }

  /** Close the stream for good (reason "client"); the session stays until logout or its TTL. */
  close(): void {
    this.#finish("client", "closed by the app", undefined);
  }

  /** Iterate over stream events and resumeGaps from now on, until the stream closes. */
  [Symbol.asyncIterator](): AsyncIterator<StreamItem> {
    const queue: StreamItem[] = [];
    const waiting: ((result: IteratorResult<StreamItem>) => void)[] = [];
    let done = this.#state === "closed";
    const sink = {
      push: (item: StreamItem | undefined) => {
        if (item === undefined) {
          done = true;
          for (const resolve of waiting.splice(0)) resolve({ done: true, value: undefined });
          return;
        }
        const resolve = waiting.shift();
        if (resolve !== undefined) resolve({ done: false, value: item });
        else queue.push(item);
      },
    };
    this.#iterators.add(sink);
    const stop = (): IteratorResult<StreamItem> => {
      this.#iterators.delete(sink);
      done = true;
      return { done: true, value: undefined };
    };
    return {
      next: () => {
        const item = queue.shift();
        if (item !== undefined) return Promise.resolve({ done: false, value: item });
        if (done) return Promise.resolve(stop());
        return new Promise((resolve) => waiting.push(resolve));
      },
      return: () => Promise.resolve(stop()),
    };
  }

  async #start(): Promise<void> {
    if (this.#isClosed()) return; // closed before it started (a UI effect's cleanup run at once)
    this.#stopListening = this.#listenToThePlatform();
    let initial = this.#options.lastEventId;
    if (initial === undefined && this.#options.lastEventIdStore !== undefined) {
      try {
        initial = await this.#options.lastEventIdStore.load();
      } catch (error) {
        this.#emitter.emit("error", error);
      }
      if (this.#isClosed()) return; // closed while the store was loading
    }
    if (initial !== undefined && !isEventId(initial)) {
      // VORA refuses it with 400, an answer told from its other 400s (an upgrade a proxy stripped) by its text alone,
      // and a browser's WebSocket shows none: never send it, start from the live end, and tell the app.
      this.#emitter.emit(
        "error",
        new VoraError(`ignoring a lastEventId that is not an eventId VORA takes: ${initial}`),
      );
      const gap: StreamGap = {
        eventId: null,
        sequenceNumber: null,
        identity: this.identity,
        type: "resumeGap",
        timestamp: new Date().toISOString(),
        data: { reason: "invalidLastEventId", requestedEventId: initial, oldestEventId: null, local: true },
      };
      this.#emitter.emit("resumeGap", gap);
      for (const iterator of this.#iterators) iterator.push(gap);
      initial = undefined;
    }
    this.#lastEventId = initial;
    this.#token = this.#options.webSocketToken;
    this.#emitter.emit("connecting", { transport: this.transport });
    void this.#attemptNow(this.#token === undefined);
  }

  #isClosed(): boolean {
    return this.#state === "closed";
  }

  #transition(to: StreamState, cause: string): void {
    const from = this.#state;
    if (!TRANSITIONS[from].includes(to)) throw new VoraError(`stream state ${from} cannot become ${to}`);
    this.#state = to;
    this.#emitter.emit("state", { from, to, cause, transport: this.transport });
  }

  #later(delayMs: number, action: () => void): ReturnType<typeof setTimeout> | undefined {
    if (this.#isClosed()) return undefined; // a listener closed the stream on the way here: nothing may outlive close()
    const timer = setTimeout(() => {
      this.#timers.delete(timer);
      action();
    }, delayMs);
    this.#timers.add(timer);
    return timer;
  }

  #clearTimers(): void {
    for (const timer of this.#timers) clearTimeout(timer);
    this.#timers.clear();
    this.#pending = undefined;
    if (this.#watchdog !== undefined) clearTimeout(this.#watchdog);
    this.#watchdog = undefined;
  }

  #schedule(step: NextStep, attempt: number): void {
    if (this.#isClosed()) return;
    if (step.kind === "stop") {
      this.#finish(step.reason, step.detail, undefined);
      return;
    }
    if (step.setup) this.#token = undefined;
    this.#transition("reconnecting", step.cause);
    if (this.#isClosed()) return; // a state listener closed the stream
    this.#emitter.emit("reconnecting", {
      attempt,
      delayMs: step.delayMs,
      cause: step.cause,
      setup: step.setup,
      transport: this.transport,
    });
    this.#wait(step.delayMs, step.setup, Date.now() + (step.retryAfterMs ?? 0));
  }

  /** Attempt after delayMs, and keep it as the pending attempt that `online` may bring forward to notBefore. */
  #wait(delayMs: number, setup: boolean, notBefore: number): void {
    const timer = this.#later(delayMs, () => {
      this.#pending = undefined;
      void this.#attemptNow(setup);
    });
    if (timer !== undefined) this.#pending = { timer, setup, notBefore };
  }

  /**
   * Listen, where the platform has them (browsers and web workers; not Node), to what says the network or the device
   * came back or went away: the stream reacts at once instead of after a backoff or a heartbeat deadline. Returns
   * what removes the listeners (close() calls it: none outlives the stream).
   */
  #listenToThePlatform(): (() => void) | undefined {
    const scope = globalThis as Partial<EventTarget>;
    const page = (globalThis as { document?: Partial<Document> }).document;
    if (typeof scope.addEventListener !== "function" || typeof scope.removeEventListener !== "function")
      return undefined;
    const added: [Partial<EventTarget>, string, () => void][] = [
      [scope, "offline", () => this.#offline()],
      [scope, "online", () => this.#online()],
      // A page shown from the back/forward cache, or a tab made visible or unfrozen again: its timers were stopped or
      // throttled meanwhile, so the watchdog may be far behind the wall clock.
      [scope, "pageshow", () => this.#checkAwake("pageshow")],
    ];
    if (page !== undefined && typeof page.addEventListener === "function") {
      added.push(
        [
          page,
          "visibilitychange",
          () => {
            if (page.visibilityState === "visible") this.#checkAwake("visibilitychange");
          },
        ],
        [page, "resume", () => this.#checkAwake("resume")],
      );
    }
    for (const [target, name, listener] of added) target.addEventListener?.(name, listener);
    return () => {
      for (const [target, name, listener] of added) target.removeEventListener?.(name, listener);
    };
  }

  /** The platform says the network is gone: a connection that looks open is held by nothing now, so drop it. */
  #offline(): void {
    if (this.#state !== "open" || this.#connection === undefined) return;
    this.#drop("offline", undefined);
  }

  /** The network is back: check the open connection, or make the pending attempt now (never before Retry-After). */
  #online(): void {
    this.#checkAwake("online");
    const pending = this.#pending;
    if (this.#state !== "reconnecting" || pending === undefined) return;
    clearTimeout(pending.timer);
    this.#timers.delete(pending.timer);
    this.#pending = undefined;
    // The attempt count stays: if this attempt fails too, the next waits as long as it would have.
    this.#wait(Math.max(0, pending.notBefore - Date.now()), pending.setup, pending.notBefore);
  }

  /**
   * Declare an open connection dead when the wall clock says no message came within the deadline. A device that
   * slept stopped the clock setTimeout runs on (Linux's monotonic clock, and others), not the wall clock, so the
   * watchdog alone would need its whole duration of awake time after the wake: a link gone meanwhile (a NAT entry
   * expired) was noticed up to 65 s late. A message within the deadline, by the wall clock, keeps the connection.
   */
  #checkAwake(trigger: string): void {
    if (this.#state !== "open" || this.#connection === undefined) return;
    const silentMs = this.#rules.wallClock() - this.#lastFrameAt;
    if (silentMs <= this.#heartbeatMs) return;
    const detail = `no message for ${Math.round(silentMs)} ms by the wall clock (${trigger}): the connection is dead`;
    this.#emitter.emit("error", new VoraError(`${detail}; the device may have slept`));
    if (this.#state !== "open" || this.#connection === undefined) return; // an error listener closed the stream
    this.#drop(`no message for ${Math.round(silentMs)} ms by the wall clock (${trigger})`, undefined);
  }

  /** Check the wall clock every rules.wakeCheckMs while the connection stays open (its timers are cleared with it). */
  #tick(generation: number): void {
    this.#later(this.#rules.wakeCheckMs, () => {
      if (generation !== this.#generation || this.#state !== "open") return;
      this.#checkAwake("tick");
      if (generation === this.#generation) this.#tick(generation);
    });
  }

  /** Stop reading the open connection, close it without waiting for its peer, and reconnect as after a 1006. */
  #drop(cause: string | undefined, reason: string | undefined): void {
    const connection = this.#connection;
    this.#generation++;
    this.#connection = undefined;
    this.#clearTimers();
    // A dead peer may never complete a close handshake: stop listening to it and move on.
    connection?.close(CLOSE_DEAD, reason ?? cause ?? "dead");
    this.#closedConnection(
      { opened: true, code: CLOSE_CUT, reason: reason ?? cause ?? "dead", handshake: undefined },
      0,
      cause,
    );
  }

  async #attemptNow(setup: boolean): Promise<void> {
    if (this.#isClosed()) return;
    const transport = this.#transports[this.#transportIndex];
    if (transport === undefined) return;
    if (setup || this.#token === undefined) {
      let subscribing = false;
      try {
        const answer =
          this.#unsubscribed ??
          (await this.#client.setupSession({
            identity: this.identity,
            connectionType: transport.connectionType,
            ...(this.#options.holdUpMode !== undefined ? { holdUpMode: this.#options.holdUpMode } : {}),
            ...(this.#options.push !== undefined ? { push: this.#options.push } : {}),
          }));
        this.#unsubscribed = answer;
        subscribing = true;
        if (this.#subscription !== undefined) await this.#client.subscribe(this.identity, this.#subscription);
        this.#unsubscribed = undefined;
        if (this.#isClosed()) return;
        this.#token = answer.webSocketToken;
        const start = answer.lastEventId;
        this.#setupStart = typeof start === "string" && isEventId(start) ? start : undefined;
        this.#setUpNotOpened = true;
        this.#unexplained = 0;
        this.#emitter.emit("setup", { identity: this.identity });
      } catch (error) {
        if (this.#isClosed()) return;
        if (subscribing && error instanceof VoraNotFoundError) {
          // The session ended before its subscription went through (evicted, or it expired during the backoff): the
          // user has no session on the identity now, so set up another.
          this.#unsubscribed = undefined;
          this.#emitter.emit("error", error);
          const attempt = this.#nextAttempt(1);
          const delayMs = refusedDelayMs(this.#rules, attempt, undefined);
          this.#schedule(
            { kind: "resume", delayMs, setup: true, cause: "session ended before its subscription" },
            attempt,
          );
          return;
        }
        this.#setupFailed(error);
        return;
      }
    }
    const token = this.#token;
    if (token === undefined) return;
    this.#connect(this.#transportIndex, token, undefined);
  }

  /** Open transports[index]; a probe is the next transport tried at once after the current one could not pass. */
  #connect(index: number, token: string, probe: Probe | undefined): void {
    const transport = this.#transports[index];
    // A listener may have closed the stream on the way here (setup, error): a connection opened now would be held
    // open, unread, by nothing.
    if (transport === undefined || this.#isClosed()) return;
    const generation = ++this.#generation;
    this.#terminated = undefined;
    const current = () => generation === this.#generation && this.#state !== "closed";
    const failed = (close: TransportClose, openedAt: number) => {
      if (probe === undefined || close.opened) this.#closedConnection(close, openedAt);
      else if (probe.stage === "confirm") this.#confirmFailed(probe, close, token);
      else this.#probeFailed(probe, close);
    };
    let openedAt = 0;
    let connection: TransportConnection;
    // With no position of its own (no channelOpened read yet), the stream opens where setup said the session's first
    // connection starts: one dropped before its channelOpened was read then resumes from setup instead of live.
    const lastEventId = this.#lastEventId ?? this.#setupStart;
    try {
      connection = transport.open(
        { baseUrl: this.#client.baseUrl, token, lastEventId },
        {
          onOpen: () => {
            if (!current()) return;
            if (probe?.stage === "probe") {
              // VORA answers now, but it may have been away during the failures (a proxy answers 502 while VORA
              // restarts): before any fallback, try the current transport once more, right away.
              this.#generation++;
              this.#connection = undefined;
              this.#clearTimers();
              queueMicrotask(() => connection.close(CLOSE_NORMAL, "probe done")); // assigned once open() returned
              this.#connect(this.#transportIndex, token, { ...probe, stage: "confirm" });
              return;
            }
            if (probe?.stage === "commit") {
              // The other transport opened, and this one could not pass even right after it did: the path blocks
              // this one, not VORA. For the rest of the stream's life: later setups declare the new connectionType.
              const from = this.transport;
              this.#transportIndex = index;
              this.#emitter.emit("fallback", { from, to: transport.name, failures: probe.failures });
              if (!current()) return; // a fallback listener closed the stream
            }
            openedAt = Date.now();
            this.#setUpNotOpened = false;
            this.#failedOpens = 0;
            this.#unexplained = 0;
            this.#transition("open", `${transport.name} open`);
            if (!current()) return; // a state listener closed the stream: no open after closed
            this.#emitter.emit("open", { transport: transport.name, lastEventId });
            if (!current()) return; // an open listener closed it: no watchdog, no stability timer
            this.#lastFrameAt = this.#rules.wallClock();
            this.#armWatchdog(generation);
            this.#tick(generation);
            this.#later(this.#rules.stableAfterMs, () => {
              if (current() && this.#state === "open") this.#attempt = 0;
            });
          },
          onMessage: (text) => {
            if (!current()) return;
            this.#lastFrameAt = this.#rules.wallClock();
            this.#armWatchdog(generation);
            this.#receive(text);
          },
          onClose: (close) => {
            if (!current()) return;
            this.#generation++;
            this.#connection = undefined;
            this.#clearTimers();
            failed(close, openedAt);
          },
        },
      );
    } catch (error) {
      this.#finish("error", error instanceof Error ? error.message : String(error), error);
      return;
    }
    this.#connection = connection;
    this.#later(this.#rules.connectTimeoutMs, () => {
      if (!current() || this.#state === "open") return;
      // Abandoned: the server accepted the TCP connection but never answered the handshake.
      this.#generation++;
      connection.close(CLOSE_NORMAL, "connect timeout");
      this.#connection = undefined;
      failed({ opened: false, code: CLOSE_CUT, reason: "connect timeout", handshake: undefined }, 0);
    });
  }

  #setupFailed(error: unknown): void {
    this.#emitter.emit("error", error);
    if (error instanceof VoraAccessTokenProviderError && !error.refused) {
      // The app's provider threw (not VoraAccessTokenRefusedError) or ran out of time: its OAuth server may be out of
      // reach for a moment, as for a phone waking on a new network. A refused attempt (rule 9), not the end.
      const attempt = this.#nextAttempt(1);
      const delayMs = refusedDelayMs(this.#rules, attempt, undefined);
      this.#schedule({ kind: "resume", delayMs, setup: true, cause: error.body.message }, attempt);
    } else if (error instanceof VoraUnauthorizedError) {
      this.#finish("unauthorized", error.message, error);
    } else if (error instanceof VoraForbiddenError) {
      this.#finish("forbidden", error.message, error);
    } else if (error instanceof VoraApiError && !error.retryable) {
      this.#finish("error", error.message, error);
    } else {
      // No answer, 429 or 5xx: back off (never sooner than Retry-After) and set up again.
      const retryAfter = error instanceof VoraApiError ? error.retryAfterSeconds : undefined;
      const attempt = this.#nextAttempt(1);
      const cause = error instanceof VoraNetworkError ? "setup got no answer" : `setup refused: ${String(error)}`;
      this.#schedule(
        {
          kind: "resume",
          delayMs: refusedDelayMs(this.#rules, attempt, retryAfter),
          setup: true,
          cause,
          retryAfterMs: (retryAfter ?? 0) * 1000,
        },
        attempt,
      );
    }
  }

  /** Apply the rules to a connection that ended; cause (a drop the stream made itself) names it instead of the code. */
  #closedConnection(close: TransportClose, openedAt: number, cause?: string): void {
    const terminated = this.#terminated;
    if (terminated === "replaced" && this.#replacedTooOften()) {
      const limit = this.#options.maxReplacedSetups ?? DEFAULT_MAX_REPLACED_SETUPS;
      this.#finish(
        "replaced",
        `replaced more than ${limit} time(s) within ${this.#replacedWindowMs()} ms: another client holds the session`,
        undefined,
      );
      return;
    }
    if (terminated !== undefined) {
      const step = afterTermination(this.#rules, terminated, this.#reconnectWindowMs);
      if (step.kind === "stop") {
        this.#schedule(step, this.#attempt);
        return;
      }
      // A session set up again and ended again before it was stable backs off like a refusal.
      const attempt = this.#nextAttempt(0);
      if (attempt > 0) step.delayMs = refusedDelayMs(this.#rules, attempt, 0);
      this.#schedule(step, attempt);
      return;
    }
    if (close.opened) {
      const stable = Date.now() - openedAt >= this.#rules.stableAfterMs;
      if (stable) this.#attempt = 0;
      // Not reset by an unstable socket: a connection that keeps dropping soon after it opens backs off like refusals.
      const attempt = this.#nextAttempt(0);
      const step = afterDrop(this.#rules, close.code, attempt, this.#reconnectWindowMs);
      if (cause !== undefined && step.kind === "resume") step.cause = cause;
      this.#schedule(step, attempt);
      return;
    }
    const handshake = close.handshake;
    if (this.#endedBeforeOpen(handshake)) return;
    const attempt = this.#nextAttempt(1);
    let step = afterRefusal(this.#rules, handshake?.status, handshake?.retryAfterSeconds, attempt);
    if (step.kind === "resume" && handshake !== undefined && !handshake.statusVisible) {
      // A browser never sees why a handshake failed: after several, assume the session is gone (a 401).
      if (++this.#unexplained >= this.#rules.setupAfterUnexplainedFailures) {
        this.#unexplained = 0;
        step.setup = true;
      }
    }
    const following = this.#transports[this.#transportIndex + 1];
    if (following !== undefined && couldNotPass(handshake)) {
      const current = this.transport;
      const cause = step.kind === "resume" ? step.cause : step.detail;
      // Until the fallback, a refusal on the way (a proxy's 403, a lost upgrade) is retried, not final.
      if (step.kind === "stop")
        step = {
          kind: "resume",
          delayMs: refusedDelayMs(this.#rules, attempt, handshake?.retryAfterSeconds),
          setup: false,
          cause,
          retryAfterMs: (handshake?.retryAfterSeconds ?? 0) * 1000,
        };
      const failures = ++this.#failedOpens;
      const token = this.#token;
      if (failures >= (this.#options.fallbackAfter ?? 2) && token !== undefined) {
        // Probe the next transport at once, with the same token (it opens either) and lastEventId. A server that
        // is down fails both, and is no fallback; one that opens is followed by one more try of this transport.
        this.#emitter.emit(
          "error",
          new VoraError(`connection attempt failed on ${current}: ${cause}; trying ${following.name}`),
        );
        this.#connect(this.#transportIndex + 1, token, { failures, step, attempt, stage: "probe" });
        return;
      }
    } else {
      this.#failedOpens = 0; // VORA itself answered: the path passes
    }
    if (step.kind === "stop" && handshake?.error !== undefined) {
      this.#emitter.emit("error", handshake.error);
      this.#finish(step.reason, `${step.detail}: ${handshake.error.body.message}`, handshake.error);
      return;
    }
    this.#emitter.emit(
      "error",
      new VoraError(`connection attempt failed: ${step.kind === "resume" ? step.cause : step.detail}`),
    );
    this.#schedule(step, attempt);
  }

  #confirmFailed(probe: Probe, close: TransportClose, token: string): void {
    const current = this.transport;
    const following = this.#transports[this.#transportIndex + 1];
    if (following === undefined || !couldNotPass(close.handshake)) {
      // VORA itself refused the retry (a 401, a 429): the path passes, and the refusal rules apply.
      this.#failedOpens = 0;
      this.#closedConnection(close, 0);
      return;
    }
    // Could not pass right after the next transport opened: VORA answers, so the path blocks this transport.
    this.#emitter.emit(
      "error",
      new VoraError(
        `connection attempt failed on ${current} again right after ${following.name} opened (${close.reason}): falling back`,
      ),
    );
    this.#connect(this.#transportIndex + 1, token, { ...probe, failures: probe.failures + 1, stage: "commit" });
  }

  #probeFailed(probe: Probe, close: TransportClose): void {
    // Nothing was learnt about the path: stay, and count afresh before the next probe.
    this.#failedOpens = 0;
    const handshake = close.handshake;
    let step = probe.step;
    if (this.#endedBeforeOpen(handshake)) return;
    if (handshake?.fromVora === true && handshake.status !== undefined) {
      // VORA itself refused the probe (a 401 for a session gone, a 503): its answer beats the hidden one.
      step = afterRefusal(this.#rules, handshake.status, handshake.retryAfterSeconds, probe.attempt);
      if (step.kind === "stop" && handshake.error !== undefined) {
        this.#emitter.emit("error", handshake.error);
        this.#finish(step.reason, `${step.detail}: ${handshake.error.body.message}`, handshake.error);
        return;
      }
    }
    const why = step.kind === "resume" ? step.cause : step.detail;
    this.#emitter.emit(
      "error",
      new VoraError(
        `the ${this.#transports[this.#transportIndex + 1]?.name ?? "next"} probe failed too (${close.reason || why}): no fallback`,
      ),
    );
    this.#schedule(step, probe.attempt);
  }

  /** Take the number of the attempt being scheduled (at least min: 1 for a refusal's), and count it. */
  #nextAttempt(min: 0 | 1): number {
    const attempt = Math.max(this.#attempt, min);
    this.#attempt = attempt + 1;
    return attempt;
  }

  #replacedWindowMs(): number {
    return this.#options.replacedWindowMs ?? DEFAULT_REPLACED_WINDOW_MS;
  }

  /**
   * Close the stream when a session set up for it was refused (401) at its first open once more than the guard
   * allows: a newer session of the same user ended it before any stream could carry the `replaced` notice, and
   * left uncounted, such evictions would let two copies of an app keep evicting each other past the guard.
   */
  #endedBeforeOpen(handshake: HandshakeFailure | undefined): boolean {
    if (handshake?.status !== 401 || !this.#setUpNotOpened || !this.#replacedTooOften()) return false;
    const limit = this.#options.maxReplacedSetups ?? DEFAULT_MAX_REPLACED_SETUPS;
    const detail = `replaced more than ${limit} time(s) within ${this.#replacedWindowMs()} ms (the last before its stream opened): another client holds the session`;
    this.#finish("replaced", detail, undefined);
    return true;
  }

  /** Record a `replaced` and tell whether the setups it allows within the window are used up. */
  #replacedTooOften(): boolean {
    const now = Date.now();
    this.#replacedAt = this.#replacedAt.filter((at) => now - at < this.#replacedWindowMs());
    this.#replacedAt.push(now);
    return this.#replacedAt.length > (this.#options.maxReplacedSetups ?? DEFAULT_MAX_REPLACED_SETUPS);
  }

  #armWatchdog(generation: number): void {
    if (this.#watchdog !== undefined) clearTimeout(this.#watchdog);
    this.#watchdog = undefined;
    if (generation !== this.#generation || this.#isClosed()) return;
    this.#watchdog = setTimeout(() => {
      this.#watchdog = undefined;
      if (generation !== this.#generation || this.#state !== "open") return;
      this.#emitter.emit("error", new VoraError(`no message for ${this.#heartbeatMs} ms: the connection is dead`));
      if (generation !== this.#generation || this.#state !== "open") return; // an error listener closed the stream
      this.#drop(undefined, "heartbeat missed");
    }, this.#heartbeatMs);
  }

  #receive(text: string): void {
    let message: unknown;
    try {
      message = JSON.parse(text);
    } catch (error) {
      this.#emitter.emit("error", error);
      return;
    }
    if (!isChannelMessage(message)) {
      this.#emitter.emit("error", new VoraError(`not an event envelope: ${text.slice(0, 200)}`));
      return;
    }
    switch (message.type) {
      case "heartbeat": {
        const heartbeat = message as HeartbeatEvent;
        const seconds = heartbeat.data.intervalSeconds;
        if (this.#options.heartbeatTimeoutMs === undefined && typeof seconds === "number" && seconds > 0) {
          this.#heartbeatMs = seconds * 2000 + HEARTBEAT_GRACE_MS;
        }
        this.#announced(heartbeat.data.reconnectWindowSeconds);
        this.#emitter.emit("heartbeat", heartbeat);
        return;
      }
      case "channelOpened": {
        const opened = message as ChannelOpenedEvent;
        const seconds = opened.data.heartbeatIntervalSeconds;
        if (this.#options.heartbeatTimeoutMs === undefined && typeof seconds === "number" && seconds > 0) {
          this.#heartbeatMs = seconds * 2000 + HEARTBEAT_GRACE_MS;
        }
        this.#announced(opened.data.reconnectWindowSeconds);
        // Nothing newer has arrived on this connection, and the server's word wins over the id sent: after
        // resumeGap "ahead" it is earlier, and keeping the id sent would drop the events that follow.
        const position = opened.data.lastEventId;
        if (typeof position === "string" && isEventId(position) && position !== this.#lastEventId) {
          this.#lastEventId = position;
          this.#save(position);
        }
        this.#emitter.emit("channelOpened", opened);
        return;
      }
      case "channelTerminated": {
        const terminated = message as ChannelTerminatedEvent;
        this.#terminated = terminated.data.reason;
        this.#emitter.emit("channelTerminated", terminated);
        return;
      }
      case "resumeGap": {
        const gap = message as ResumeGapEvent;
        this.#emitter.emit("resumeGap", gap);
        for (const iterator of this.#iterators) iterator.push(gap);
        return;
      }
      default:
        // Stream events carry an eventId; lifecycle and control messages a null one (rule 3). One of a type this
        // SDK does not know comes from a newer server: ignored, never an error, so old clients keep working.
        if (typeof (message as { eventId?: unknown }).eventId !== "string") return;
        this.#deliver(message as VoraEvent);
    }
  }

  /** Keep the reconnect window a channelOpened or heartbeat announced (the latest wins; older servers send none). */
  #announced(seconds: unknown): void {
    if (typeof seconds === "number" && Number.isFinite(seconds) && seconds > 0)
      this.#reconnectWindowMs = seconds * 1000;
  }

  #deliver(event: VoraEvent): void {
    if (typeof event.eventId !== "string" || !isEventId(event.eventId)) {
      this.#emitter.emit("error", new VoraError(`an event without a valid eventId: ${event.type}`));
      return;
    }
    // In order, each once: anything at or before the last delivered position was delivered already.
    if (this.#lastEventId !== undefined && compareEventIds(event.eventId, this.#lastEventId) <= 0) return;
    this.#lastEventId = event.eventId;
    this.#emitter.emit("event", event);
    for (const iterator of this.#iterators) iterator.push(event);
    this.#save(event.eventId);
  }

  #save(eventId: string): void {
    const store = this.#options.lastEventIdStore;
    if (store === undefined) return;
    try {
      void Promise.resolve(store.save(eventId)).catch((error: unknown) => this.#emitter.emit("error", error));
    } catch (error) {
      this.#emitter.emit("error", error);
    }
  }

  #finish(reason: CloseReason, detail: string, error: unknown): void {
    if (this.#isClosed()) return;
    this.#clearTimers();
    this.#stopListening?.();
    this.#stopListening = undefined;
    this.#generation++;
    this.#connection?.close(CLOSE_NORMAL, "closed by the client");
    this.#connection = undefined;
    this.#transition("closed", reason);
    this.#closed = { reason, detail, error };
    this.#emitter.emit("closed", this.#closed);
    for (const iterator of this.#iterators) iterator.push(undefined);
    this.#iterators.clear();
    this.#resolveClosed(this.#closed);
  }
}
