import {
  VoraAccessTokenProviderError,
  VoraAccessTokenRefusedError,
  VoraNetworkError,
  apiError,
  describeFailure,
} from "./errors.js";
import type { StreamOptions } from "./stream.js";
import { VoraStream } from "./stream.js";
import type {
  ConnectionType,
  IdentitiesResponse,
  PushRegistration,
  SetupRequest,
  SetupResponse,
  Subscription,
} from "./types.js";

/** Why the SDK asks for an access token: `refresh` after VORA refused the previous one with 401. */
export interface TokenRequest {
  refresh: boolean;
}

/**
 * The app's access-token source (OAuth stays the app's: refresh when asked to). To say the user must log in again
 * (the refresh token was revoked), throw VoraAccessTokenRefusedError: a stream then closes with "unauthorized".
 * Anything else it throws, or taking longer than accessTokenTimeoutMs, a stream takes as passing and retries.
 */
export type AccessTokenProvider = (request: TokenRequest) => Promise<string> | string;

export interface ClientOptions {
  /** VORA's REST base URL, for example `https://vora.example.com/vora`. */
  baseUrl: string;
  /** Returns a current OAuth2 access token. */
  accessToken: AccessTokenProvider;
  /**
   * A fetch implementation (the global one by default), for the REST calls and the SSE transport of the
   * client's streams (`transport: "auto"` or `"sse"`). On Node behind a forward proxy: undici's fetch with a
   * ProxyAgent as its dispatcher (docs/clients.md, "Behind a forward proxy").
   */
  fetch?: typeof fetch;
  /** Milliseconds before a REST call is abandoned (default 15000). */
  requestTimeoutMs?: number;
  /** Milliseconds the access-token provider has to answer before the call (or a stream's attempt) fails (default 10000). */
  accessTokenTimeoutMs?: number;
}

export interface SetupOptions {
  identity: string;
  /** WebSocket by default; ServerSentEvents for a client on the /vora/sse stream (the token opens either). */
  connectionType?: ConnectionType;
  /** Mobile softphones that sleep without a socket: VORA wakes them by push for incoming calls. */
  holdUpMode?: boolean;
  /** Only with holdUpMode. */
  push?: PushRegistration;
}

const DEFAULT_TIMEOUT_MS = 15_000;
const DEFAULT_ACCESS_TOKEN_TIMEOUT_MS = 10_000;

/** VORA's client: the REST session operations, and streams of events. */
export class VoraClient {
  readonly baseUrl: string;
  readonly #accessToken: AccessTokenProvider;
  readonly #fetch: typeof fetch;
  /** The fetch the app passed (undefined: the platform's), which the client's streams' SSE transport uses too. */
  readonly injectedFetch: typeof fetch | undefined;
  readonly #timeoutMs: number;
  readonly #accessTokenTimeoutMs: number;

  constructor(options: ClientOptions) {
    this.baseUrl = options.baseUrl.replace(/\/+$/, "");
    this.#accessToken = options.accessToken;
    const fetchImpl = options.fetch ?? globalThis.fetch;
    if (typeof fetchImpl !== "function") throw new TypeError("no fetch: pass options.fetch");
    // Bound, because a browser's fetch must be called with globalThis as this.
    this.#fetch = fetchImpl.bind(globalThis);
    this.injectedFetch = options.fetch === undefined ? undefined : this.#fetch;
    this.#timeoutMs = options.requestTimeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.#accessTokenTimeoutMs = options.accessTokenTimeoutMs ?? DEFAULT_ACCESS_TOKEN_TIMEOUT_MS;
  }

  /** List the identities the caller may set up sessions on (GET /identity). */
  async identities(): Promise<string[]> {
    const body = (await this.#call("GET", "/identity")) as IdentitiesResponse;
    return body.identities;
  }

  /** Open a session on an identity and return its webSocketToken (POST /identity/setup). */
  async setup(options: SetupOptions): Promise<string> {
    return (await this.setupSession(options)).webSocketToken;
  }

  /**
   * Open a session on an identity and return setup's whole answer (POST /identity/setup): its webSocketToken, and
   * the lastEventId its first connection starts after (VORA before it sent none), to open that connection with.
   */
  async setupSession(options: SetupOptions): Promise<SetupResponse> {
    const body: SetupRequest = { connectionType: options.connectionType ?? "WebSocket", identity: options.identity };
    if (options.holdUpMode !== undefined) body.holdUpMode = options.holdUpMode;
    if (options.push !== undefined) body.push = options.push;
    return (await this.#call("POST", "/identity/setup", body)) as SetupResponse;
  }

  /** Choose the events the caller's sessions on an identity receive (POST /identity/{identity}/eventSubscription). */
  async subscribe(identity: string, subscription: Subscription): Promise<void> {
    await this.#call("POST", `/identity/${encodeURIComponent(identity)}/eventSubscription`, subscription);
  }

  /** End the caller's sessions on an identity; their streams close with reason logout (POST /logout/{identity}). */
  async logout(identity: string): Promise<void> {
    await this.#call("POST", `/logout/${encodeURIComponent(identity)}`);
  }

  /** Set up a session and hold its event stream open by VORA's rules until it is closed. */
  stream(options: StreamOptions): VoraStream {
    return new VoraStream(this, options);
  }

  async #call(method: string, path: string, body?: unknown): Promise<unknown> {
    let response = await this.#send(method, path, body, false);
    if (response.status === 401) {
      // The provider may hold a stale token: ask once for a fresh one.
      await response.body?.cancel();
      response = await this.#send(method, path, body, true);
    }
    const text = await response.text();
    let parsed: unknown = text;
    if (text !== "" && (response.headers.get("content-type") ?? "").includes("json")) {
      try {
        parsed = JSON.parse(text);
      } catch {
        parsed = text;
      }
    }
    if (!response.ok) throw apiError(response.status, response.statusText, parsed, response.headers.get("retry-after"));
    return parsed;
  }

  /** Ask the app's provider for a token within accessTokenTimeoutMs, or reject with VoraAccessTokenProviderError. */
  async #token(refresh: boolean): Promise<string> {
    const limitMs = this.#accessTokenTimeoutMs;
    let timer: ReturnType<typeof setTimeout> | undefined;
    // A provider that never answers (an OAuth server that accepts and stalls) must not hold a stream for ever.
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () =>
          reject(
            new VoraAccessTokenProviderError(
              `the access token provider gave no token within ${limitMs / 1000} s`,
              undefined,
            ),
          ),
        limitMs,
      );
    });
    try {
      return await Promise.race([Promise.resolve().then(() => this.#accessToken({ refresh })), late]);
    } catch (cause) {
      if (cause instanceof VoraAccessTokenProviderError) throw cause;
      const message =
        cause instanceof VoraAccessTokenRefusedError
          ? `the access token provider refused: ${cause.message}`
          : `the access token provider failed: ${String(cause)}`;
      throw new VoraAccessTokenProviderError(message, cause);
    } finally {
      clearTimeout(timer);
    }
  }

  async #send(method: string, path: string, body: unknown, refresh: boolean): Promise<Response> {
    const token = await this.#token(refresh);
    const headers: Record<string, string> = { Authorization: `Bearer ${token}`, Accept: "application/json" };
    const init: RequestInit = { method, headers, signal: AbortSignal.timeout(this.#timeoutMs) };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    try {
      return await this.#fetch(this.baseUrl + path, init);
    } catch (cause) {
      throw new VoraNetworkError(`${method} ${path} got no answer: ${describeFailure(cause)}`, { cause });
    }
  }
}
