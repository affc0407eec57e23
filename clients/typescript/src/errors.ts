/** The body of every VORA error response (spec/vora.yaml ResponseStatusVoraError). */
export interface VoraErrorBody {
  timestamp: string;
  status: string;
  error: string;
  message: string;
}

/** Base class of everything this SDK throws on purpose. */
export class VoraError extends Error {
  override name = "VoraError";
}

/** VORA answered with an error status; carries its error body and Retry-After. */
export class VoraApiError extends VoraError {
  override name = "VoraApiError";
  /** The HTTP status (401, 403, 503, ...). */
  readonly status: number;
  /** The error shape {timestamp, status, error, message}; synthesised when a proxy answered with something else. */
  readonly body: VoraErrorBody;
  /** Seconds from the Retry-After header, when there was one. */
  readonly retryAfterSeconds: number | undefined;

  constructor(status: number, body: VoraErrorBody, retryAfterSeconds: number | undefined) {
    super(`${status} ${body.error}: ${body.message}`);
    this.status = status;
    this.body = body;
    this.retryAfterSeconds = retryAfterSeconds;
  }

  /** Tell whether the same request may succeed later (503, 429, 5xx). */
  get retryable(): boolean {
    return this.status === 429 || this.status >= 500;
  }
}

/** 401: the access token was refused (expired, revoked, malformed). */
export class VoraUnauthorizedError extends VoraApiError {
  override name = "VoraUnauthorizedError";
}

/**
 * Thrown by the app's access-token provider when no token can be had until the user acts (the refresh token was
 * revoked, the user logged out): a stream then closes with reason "unauthorized" and tries no more. Anything else
 * the provider throws (its OAuth server out of reach) is taken as passing, and a stream retries.
 */
export class VoraAccessTokenRefusedError extends VoraError {
  override name = "VoraAccessTokenRefusedError";
}

/**
 * The app's access-token provider threw, or gave no token within `accessTokenTimeoutMs`. A REST call rejects with it
 * (a 401 the SDK made; `cause` is what the provider threw). A stream retries with a refused attempt's backoff and
 * emits it as an `error`, unless `refused` (the provider threw VoraAccessTokenRefusedError): then it closes with
 * reason "unauthorized".
 */
export class VoraAccessTokenProviderError extends VoraUnauthorizedError {
  override name = "VoraAccessTokenProviderError";
  /** The provider threw VoraAccessTokenRefusedError: the user must log in again. */
  readonly refused: boolean;

  constructor(message: string, cause: unknown) {
    super(401, { timestamp: new Date().toISOString(), status: "401", error: "Unauthorized", message }, undefined);
    this.cause = cause;
    this.refused = cause instanceof VoraAccessTokenRefusedError;
  }
}

/** 403: the token lacks a scope, or the identity is not the caller's. */
export class VoraForbiddenError extends VoraApiError {
  override name = "VoraForbiddenError";
}

/** 404: no such identity or session. */
export class VoraNotFoundError extends VoraApiError {
  override name = "VoraNotFoundError";
}

/** 409: the request conflicts with the identity's sessions (for example too many). */
export class VoraConflictError extends VoraApiError {
  override name = "VoraConflictError";
}

/** 503 (or 429): VORA or its store is busy; retry after retryAfterSeconds. */
export class VoraUnavailableError extends VoraApiError {
  override name = "VoraUnavailableError";
}

/** The request never got an HTTP answer (connection refused, reset, DNS, CORS). */
export class VoraNetworkError extends VoraError {
  override name = "VoraNetworkError";
  constructor(message: string, options?: { cause: unknown }) {
    super(message, options);
  }
}

/**
 * Describe a failure with the causes it carries: Node's fetch throws "fetch failed" and keeps what happened (a
 * refused connection, a forward proxy's 407 to CONNECT) in `cause`, which a message must not drop.
 */
export function describeFailure(error: unknown): string {
  const parts: string[] = [];
  for (let current: unknown = error, depth = 0; current !== undefined && current !== null && depth < 4; depth += 1) {
    const text = current instanceof Error ? current.message || current.name : String(current);
    if (text !== "" && !parts.includes(text)) parts.push(text);
    current = current instanceof Error ? current.cause : undefined;
  }
  return parts.join(": ");
}

/** Parse a Retry-After header (delta seconds or an HTTP date) into seconds, or undefined. */
export function parseRetryAfter(value: string | null | undefined, now: number = Date.now()): number | undefined {
  if (value === null || value === undefined || value.trim() === "") return undefined;
  const trimmed = value.trim();
  if (/^\d+$/.test(trimmed)) return Number(trimmed);
  const date = Date.parse(trimmed);
  return Number.isNaN(date) ? undefined : Math.max(0, Math.ceil((date - now) / 1000));
}

/** Tell whether a parsed body is VORA's error shape {timestamp, status, error, message}. */
export function isErrorBody(value: unknown): value is VoraErrorBody {
  if (typeof value !== "object" || value === null) return false;
  const record = value as Record<string, unknown>;
  return ["timestamp", "status", "error", "message"].every((key) => typeof record[key] === "string");
}

/** Build the typed exception for an error response. */
export function apiError(status: number, statusText: string, body: unknown, retryAfter: string | null): VoraApiError {
  const shaped: VoraErrorBody = isErrorBody(body)
    ? body
    : {
        timestamp: new Date().toISOString(),
        status: String(status),
        error: statusText || "Error",
        message: typeof body === "string" ? body.slice(0, 500) : "",
      };
  const seconds = parseRetryAfter(retryAfter);
  const kind =
    status === 401
      ? VoraUnauthorizedError
      : status === 403
        ? VoraForbiddenError
        : status === 404
          ? VoraNotFoundError
          : status === 409
            ? VoraConflictError
            : status === 503 || status === 429
              ? VoraUnavailableError
              : VoraApiError;
  return new kind(status, shaped, seconds);
}
