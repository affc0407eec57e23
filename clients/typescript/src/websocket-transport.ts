import { apiError, isErrorBody, parseRetryAfter } from "./errors.js";
import type { HandshakeFailure, Transport, TransportConnection, TransportSink, TransportTarget } from "./transport.js";

/** The part of the WHATWG WebSocket the SDK uses (browsers, Node 22+, undici, and the `ws` package all have it). */
export interface WebSocketLike {
  addEventListener(type: "open", listener: () => void): void;
  addEventListener(type: "message", listener: (event: { data: unknown }) => void): void;
  addEventListener(type: "close", listener: (event: { code: number; reason: string }) => void): void;
  addEventListener(type: "error", listener: (event: unknown) => void): void;
  close(code?: number, reason?: string): void;
}

/** A WebSocket constructor: the global one, or an injected one such as `ws`'s on Node 20. */
export type WebSocketConstructor = new (url: string) => WebSocketLike;

export interface WebSocketTransportOptions {
  /** The WebSocket class to use; the global WebSocket by default. */
  WebSocket?: WebSocketConstructor;
  /** The socket URL; by default the base URL with ws(s):// and /ws appended. */
  url?: string;
}

const CLOSE_ABNORMAL = 1006;
const CLOSE_AFTER_ERROR_MS = 5_000;
// A refusal's body tells VORA's error shape from a proxy's page; read this much of it, for this long.
const REFUSAL_BODY_LIMIT = 16_384;
const REFUSAL_BODY_MS = 2_000;

// `ws`'s WebSocket is also an EventEmitter that can show a refused handshake's response.
interface UpgradeResponse {
  statusCode?: number;
  statusMessage?: string;
  headers: Record<string, string | string[] | undefined>;
  socket: { destroy(): void } | null;
  setEncoding(encoding: "utf8"): void;
  on(event: "data", listener: (chunk: string) => void): void;
  on(event: "end" | "error", listener: () => void): void;
}
interface EmitterLike {
  on(
    event: "unexpected-response",
    listener: (request: { destroy(error?: Error): void }, response: UpgradeResponse) => void,
  ): void;
}
function isEmitter(value: unknown): value is EmitterLike {
  return typeof (value as { on?: unknown }).on === "function";
}

/** Return the event socket's URL for a REST base URL: http(s) becomes ws(s), then /ws. */
export function socketUrl(baseUrl: string): string {
  const url = new URL(baseUrl.replace(/\/+$/, "") + "/ws");
  url.protocol = url.protocol === "https:" ? "wss:" : url.protocol === "http:" ? "ws:" : url.protocol;
  return url.toString();
}

/** The event channel over WebSocket (`/vora/ws?token=…&lastEventId=…`). */
export function webSocketTransport(options: WebSocketTransportOptions = {}): Transport {
  const resolve = (): WebSocketConstructor | undefined =>
    options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
  return {
    name: "websocket",
    connectionType: "WebSocket",
    available: () => resolve() !== undefined,
    open(target: TransportTarget, sink: TransportSink): TransportConnection {
      const Socket = resolve();
      if (Socket === undefined) {
        throw new TypeError(
          "no WebSocket: on Node 20 pass webSocketTransport({ WebSocket }) from the `ws` package, or run node with --experimental-websocket",
        );
      }
      const url = new URL(options.url ?? socketUrl(target.baseUrl));
      url.searchParams.set("token", target.token);
      if (target.lastEventId !== undefined) url.searchParams.set("lastEventId", target.lastEventId);
      const socket = new Socket(url.toString());
      let opened = false;
      let closed = false;
      const handshake: HandshakeFailure = {
        status: undefined,
        retryAfterSeconds: undefined,
        statusVisible: false,
        fromVora: false,
        error: undefined,
      };
      let closeAfterError: ReturnType<typeof setTimeout> | undefined;
      const report = (code: number, reason: string) => {
        // The close came: the wait for it after an error ends too (a pending timer keeps a Node process alive).
        clearTimeout(closeAfterError);
        if (closed) return;
        closed = true;
        sink.onClose({ opened, code, reason, handshake: opened ? undefined : handshake });
      };
      if (isEmitter(socket)) {
        handshake.statusVisible = true;
        socket.on("unexpected-response", (request, response) => {
          handshake.status = response.statusCode;
          // Node takes ws's Connection: Upgrade request for keep-alive: once the refusal is read to its end it
          // detaches the socket from the request and the response, and with no agent to take it back, neither's
          // destroy reaches it. Left open, it holds a connection on the server until its keep-alive timeout (75 s
          // on VORA and nginx) and keeps the process alive, so it is closed here, by hand.
          const connection = response.socket;
          const header = response.headers["retry-after"];
          const retryAfter = Array.isArray(header) ? header[0] : header;
          handshake.retryAfterSeconds = parseRetryAfter(retryAfter);
          // Read the refusal's body before giving up on it: VORA's error shape, or a proxy's page?
          let body = "";
          let done = false;
          const finish = () => {
            if (done) return;
            done = true;
            clearTimeout(timer);
            let parsed: unknown = body;
            try {
              parsed = JSON.parse(body);
            } catch {
              // not JSON: a proxy's page, kept as text
            }
            handshake.fromVora = isErrorBody(parsed);
            handshake.error = apiError(
              response.statusCode ?? 0,
              response.statusMessage ?? "",
              parsed,
              retryAfter ?? null,
            );
            // Once the response was read, ws reports nothing more of this attempt: report it here.
            report(CLOSE_ABNORMAL, `refused ${response.statusCode ?? "?"}`);
            request.destroy(new Error(`Unexpected server response: ${response.statusCode ?? "?"}`));
            connection?.destroy();
          };
          const timer = setTimeout(finish, REFUSAL_BODY_MS);
          response.setEncoding("utf8");
          response.on("data", (chunk) => {
            body += chunk;
            if (body.length > REFUSAL_BODY_LIMIT) finish();
          });
          response.on("end", finish);
          response.on("error", finish);
        });
      }
      socket.addEventListener("open", () => {
        opened = true;
        sink.onOpen();
      });
      socket.addEventListener("message", (event) => {
        if (typeof event.data === "string") sink.onMessage(event.data);
      });
      socket.addEventListener("error", () => {
        // Browsers follow an error with close; Node 20's experimental WebSocket may not, when the
        // connection fails before the upgrade. Report it at once then, and if close never comes after.
        if (!opened) report(CLOSE_ABNORMAL, "connection failed");
        else closeAfterError = setTimeout(() => report(CLOSE_ABNORMAL, "connection failed"), CLOSE_AFTER_ERROR_MS);
      });
      socket.addEventListener("close", (event) => report(event.code, event.reason));
      return {
        close(code: number, reason: string) {
          try {
            socket.close(code, reason);
          } catch {
            socket.close();
          }
        },
      };
    },
  };
}
