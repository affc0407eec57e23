import type { TerminationReason } from "./types.js";

/** The README's reconnect rules, as numbers (tests shrink the windows; apps should not). */
export interface ReconnectRules {
  /**
   * First attempt after a drop that hits many clients at once (1006, 1001, 1011, a dead connection, maintenance):
   * uniform(0, W), W being the reconnect window the server last announced (`reconnectWindowSeconds`), or this when
   * the stream has received none (an older server).
   */
  massDropWindowMs: number;
  /** First attempt after a drop about this client alone (1008, 4008) and before setting up again (1000, 4401, replaced…): uniform(0, this). */
  singleDropWindowMs: number;
  /** Refused attempt n waits Retry-After plus uniform(0, min(backoffCapMs, 2**n seconds)). */
  backoffCapMs: number;
  /** A socket open this long starts the next drop from the first attempt again. */
  stableAfterMs: number;
  /** An attempt not open after this long is abandoned, and counts as refused with Retry-After 0. */
  connectTimeoutMs: number;
  /** Unexplained handshake failures in a row (a browser sees no HTTP status) before the session is set up again. */
  setupAfterUnexplainedFailures: number;
  /** The random source, uniform in [0, 1). */
  random: () => number;
  /**
   * How often an open stream compares the wall clock with its last message's time (docs/clients.md rule 6): a device
   * that slept stopped its timers' clock, not the wall clock, so this notices a dead link within this much awake time.
   */
  wakeCheckMs: number;
  /**
   * The wall clock that check reads (Date.now). A seam for the one test that stands for a suspended device (the
   * clock jumps, the timers do not); apps leave it alone.
   */
  wallClock: () => number;
}

export const DEFAULT_RULES: ReconnectRules = {
  massDropWindowMs: 20_000,
  singleDropWindowMs: 1_000,
  backoffCapMs: 30_000,
  stableAfterMs: 20_000,
  connectTimeoutMs: 10_000,
  setupAfterUnexplainedFailures: 4,
  random: Math.random,
  wakeCheckMs: 5_000,
  wallClock: () => Date.now(),
};

/** Close codes after which the session is over: set up again. */
const SESSION_OVER = new Set([1000, 4401]);
/** Close codes about this client alone. */
const SINGLE_DROP = new Set([1008, 4008]);
/** HTTP refusals that no retry can fix. */
const FATAL_HANDSHAKE = new Set([400, 403, 404, 426]);

/** What the stream does after a connection ends. */
export type NextStep =
  | { kind: "stop"; reason: "logout" | "revoked" | "error"; detail: string }
  | {
      kind: "resume";
      delayMs: number;
      setup: boolean;
      cause: string;
      /** The part of delayMs the server asked for (Retry-After): nothing, not even the network coming back, cuts it. */
      retryAfterMs?: number;
    };

function uniform(rules: ReconnectRules, maxMs: number): number {
  return rules.random() * maxMs;
}

/** Refused attempt n (1, 2, ...): Retry-After, then full jitter up to min(cap, 2**n s). */
export function refusedDelayMs(rules: ReconnectRules, attempt: number, retryAfterSeconds: number | undefined): number {
  return (retryAfterSeconds ?? 0) * 1000 + uniform(rules, Math.min(rules.backoffCapMs, 2 ** attempt * 1000));
}

/** The bound of the first delay after a crowd drop: the window the server announced, else massDropWindowMs. */
function crowdWindowMs(rules: ReconnectRules, announcedWindowMs: number | undefined): number {
  return announcedWindowMs ?? rules.massDropWindowMs;
}

/**
 * First attempt after a drop: a window by close code. announcedWindowMs is the reconnect window the server last
 * announced to the stream (`reconnectWindowSeconds`, in ms), which bounds a crowd drop's delay; undefined when none.
 */
export function firstDelayMs(rules: ReconnectRules, code: number, announcedWindowMs?: number): number {
  // 1000 and 4401 end the session: set up again after uniform(0, 1) s, as after replaced (docs/clients.md rule 8).
  const alone = SINGLE_DROP.has(code) || SESSION_OVER.has(code);
  return uniform(rules, alone ? rules.singleDropWindowMs : crowdWindowMs(rules, announcedWindowMs));
}

/** What a channelTerminated reason asks for; announcedWindowMs as for firstDelayMs (maintenance waits within it). */
export function afterTermination(
  rules: ReconnectRules,
  reason: TerminationReason,
  announcedWindowMs?: number,
): NextStep {
  switch (reason) {
    case "logout":
    case "revoked":
      return { kind: "stop", reason, detail: `channelTerminated: ${reason}` };
    case "maintenance":
      return {
        kind: "resume",
        delayMs: uniform(rules, crowdWindowMs(rules, announcedWindowMs)),
        setup: false,
        cause: "maintenance",
      };
    case "replaced":
    case "tokenExpired":
    case "disconnected":
      return { kind: "resume", delayMs: uniform(rules, rules.singleDropWindowMs), setup: true, cause: reason };
    default:
      // A reason a newer server added: the session is over as far as this SDK knows, so set up again (as Python does).
      return { kind: "resume", delayMs: uniform(rules, rules.singleDropWindowMs), setup: true, cause: String(reason) };
  }
}

/**
 * What a drop of an open socket (no channelTerminated) asks for; attempt is 0 when the socket was stable;
 * announcedWindowMs as for firstDelayMs.
 */
export function afterDrop(rules: ReconnectRules, code: number, attempt: number, announcedWindowMs?: number): NextStep {
  const setup = SESSION_OVER.has(code);
  const delayMs = attempt === 0 ? firstDelayMs(rules, code, announcedWindowMs) : refusedDelayMs(rules, attempt, 0);
  return { kind: "resume", delayMs, setup, cause: `closed ${code}` };
}

/** What a failed attempt asks for; attempt counts the failures since the last stable socket (1, 2, ...). */
export function afterRefusal(
  rules: ReconnectRules,
  status: number | undefined,
  retryAfterSeconds: number | undefined,
  attempt: number,
): NextStep {
  if (status !== undefined && FATAL_HANDSHAKE.has(status)) {
    return { kind: "stop", reason: "error", detail: `the handshake was refused with HTTP ${status}` };
  }
  return {
    kind: "resume",
    delayMs: refusedDelayMs(rules, attempt, retryAfterSeconds),
    setup: status === 401,
    cause: status === undefined ? "no answer" : `refused ${status}`,
    retryAfterMs: (retryAfterSeconds ?? 0) * 1000,
  };
}
