import { apiError, describeFailure, isErrorBody, parseRetryAfter } from "./errors.js";
import { EventStreamParser, parseClosedComment } from "./event-stream-parser.js";
import type { HandshakeFailure, Transport, TransportConnection, TransportSink, TransportTarget } from "./transport.js";

/** The part of WHATWG fetch the transport uses (browsers, Node 20's global fetch, undici). */
export type FetchLike = (input: string, init: RequestInit) => Promise<Response>;

export interface SseTransportOptions {
  /** The fetch to use; the global fetch by default. */
  fetch?: FetchLike;
  /** The stream's URL; by default the base URL with /sse appended. */
  url?: string;
  /**
   * Where the session's token travels: the Authorization header (the default: it stays out of URLs and
   * access logs) or the `token` query parameter (for a proxy or a CORS setup that does not pass the header).
   */
  tokenIn?: "header" | "query";
  /**
   * Where the last eventId travels on resume: the Last-Event-ID header, or the `lastEventId` query parameter.
   * "auto" (the default): the header, except from a page on another origin, where a header outside CORS's
   * safelist needs VORA's preflight to allow it (VORA's CORS allows Authorization, not Last-Event-ID).
   */
  lastEventIdIn?: "header" | "query" | "auto";
}

const CLOSE_ABNORMAL = 1006;
const REFUSAL_BODY_LIMIT = 16_384;

/** Return the event stream's URL for a REST base URL: the base URL with /sse appended. */
export function eventStreamUrl(baseUrl: string): string {
  return new URL(baseUrl.replace(/\/+$/, "") + "/sse").toString();
}

function lastEventIdInQuery(where: "header" | "query" | "auto", url: URL): boolean {
  if (where !== "auto") return where === "query";
  const page = (globalThis as { location?: { origin?: string } }).location?.origin;
  return page !== undefined && page !== url.origin;
}

async function readRefusal(response: Response): Promise<unknown> {
  let text = "";
  try {
    text = (await response.text()).slice(0, REFUSAL_BODY_LIMIT);
    return JSON.parse(text) as unknown;
  } catch {
    return text;
  }
}

/**
 * The event channel over Server-Sent Events (`GET /vora/sse`), read with fetch and a streaming body rather
 * than EventSource: a refusal's HTTP status, Retry-After and error shape stay visible, the token can ride in
 * the Authorization header, and VORA's closing comment (`: closed CODE REASON`) gives the socket's close code.
 * The stream's own `retry:` is for EventSource; the SDK's reconnect rules apply here, as on the socket.
 */
export function sseTransport(options: SseTransportOptions = {}): Transport {
  const resolve = (): FetchLike | undefined =>
    options.fetch ?? (typeof globalThis.fetch === "function" ? globalThis.fetch.bind(globalThis) : undefined);
  return {
    name: "sse",
    connectionType: "ServerSentEvents",
    available: () => resolve() !== undefined && typeof TextDecoder === "function",
    open(target: TransportTarget, sink: TransportSink): TransportConnection {
      const fetchStream = resolve();
      if (fetchStream === undefined) throw new TypeError("no fetch: pass sseTransport({ fetch })");
      const url = new URL(options.url ?? eventStreamUrl(target.baseUrl));
      // Accept only (CORS-safelisted) besides Authorization: `cache: "no-store"` keeps caches out of it.
      const headers: Record<string, string> = { Accept: "text/event-stream" };
      if (options.tokenIn === "query") url.searchParams.set("token", target.token);
      else headers["Authorization"] = `Bearer ${target.token}`;
      if (target.lastEventId !== undefined) {
        if (lastEventIdInQuery(options.lastEventIdIn ?? "auto", url))
          url.searchParams.set("lastEventId", target.lastEventId);
        else headers["Last-Event-ID"] = target.lastEventId;
      }
      const abort = new AbortController();
      let opened = false;
      let finished = false;
      let closing: { code: number; reason: string } | undefined;
      const report = (code: number, reason: string, handshake?: HandshakeFailure) => {
        if (finished) return;
        finished = true;
        abort.abort();
        sink.onClose({ opened, code, reason, handshake: opened ? undefined : (handshake ?? noAnswer()) });
      };
      const noAnswer = (): HandshakeFailure => ({
        status: undefined,
        retryAfterSeconds: undefined,
        statusVisible: true,
        fromVora: false,
        error: undefined,
      });
      const run = async () => {
        let response: Response;
        try {
          response = await fetchStream(url.toString(), {
            method: "GET",
            headers,
            signal: abort.signal,
            cache: "no-store",
          });
        } catch (error) {
          report(CLOSE_ABNORMAL, `connection failed: ${describeFailure(error)}`);
          return;
        }
        const type = response.headers.get("Content-Type") ?? "";
        if (!response.ok || !type.toLowerCase().startsWith("text/event-stream") || response.body === null) {
          const body = await readRefusal(response);
          const retryAfter = response.headers.get("Retry-After");
          const refused = response.ok ? 502 : response.status;
          report(
            CLOSE_ABNORMAL,
            response.ok ? `not an event stream (${type || "no Content-Type"})` : `refused ${response.status}`,
            {
              // A 200 that is not an event stream is a proxy's page: no VORA status to act on.
              status: response.ok ? undefined : response.status,
              retryAfterSeconds: parseRetryAfter(retryAfter),
              statusVisible: true,
              fromVora: !response.ok && isErrorBody(body),
              error: apiError(refused, response.statusText, body, retryAfter),
            },
          );
          return;
        }
        const reader = response.body.getReader();
        const decoder = new TextDecoder("utf-8");
        const parser = new EventStreamParser({
          onMessage: (message) => {
            if (!finished && message.event === "message") sink.onMessage(message.data);
          },
          onComment: (text) => {
            closing ??= parseClosedComment(text);
          },
        });
        opened = true;
        sink.onOpen();
        try {
          for (;;) {
            const { done, value } = await reader.read();
            if (finished) return;
            if (done) break;
            parser.push(decoder.decode(value, { stream: true }));
          }
          parser.push(decoder.decode());
        } catch (error) {
          report(CLOSE_ABNORMAL, `stream cut: ${error instanceof Error ? error.message : String(error)}`);
          return;
        }
        // VORA ends every stream with its closing comment; a body that ends without one was cut.
        if (closing !== undefined) report(closing.code, closing.reason);
        else report(CLOSE_ABNORMAL, "stream ended without a closing comment");
      };
      void run();
      return {
        close(code: number, reason: string) {
          report(code, reason);
        },
      };
    },
  };
}
