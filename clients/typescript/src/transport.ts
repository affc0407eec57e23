import type { VoraApiError } from "./errors.js";
import type { ConnectionType } from "./types.js";

/** Where and how one connection attempt opens. */
export interface TransportTarget {
  /** VORA's REST base URL (the transport derives its own endpoint from it). */
  baseUrl: string;
  /** The session's token from setup. */
  token: string;
  /** The last eventId the app processed, to resume after it. */
  lastEventId: string | undefined;
}

/** What the platform could tell about an attempt that never opened. */
export interface HandshakeFailure {
  /** The HTTP status of the refusal, when the platform shows it (browsers never do for WebSocket). */
  status: number | undefined;
  /** Retry-After in seconds, when the platform shows it. */
  retryAfterSeconds: number | undefined;
  /** True when a refusal's status would have been visible: an undefined status then means no HTTP answer at all. */
  statusVisible: boolean;
  /** The refusal's body was VORA's error shape (so VORA itself answered, not a proxy on the way); false when unseen. */
  fromVora: boolean;
  /** The refusal as a typed error, when its status and body could be read. */
  error: VoraApiError | undefined;
}

/** How a connection ended. */
export interface TransportClose {
  /** Whether the connection had opened. */
  opened: boolean;
  /** The close code (WebSocket codes; 1006 for a connection cut without a close frame). */
  code: number;
  reason: string;
  /** Set when the attempt never opened. */
  handshake: HandshakeFailure | undefined;
}

/** Where a connection reports; a transport calls onClose exactly once, and nothing after it. */
export interface TransportSink {
  onOpen(): void;
  /** One message: the JSON text of one envelope. */
  onMessage(text: string): void;
  onClose(close: TransportClose): void;
}

/** One open (or opening) connection. */
export interface TransportConnection {
  /** Close from this side; the sink still gets onClose. */
  close(code: number, reason: string): void;
}

/** A way to carry the event channel: WebSocket (`/vora/ws`) or Server-Sent Events (`/vora/sse`). */
export interface Transport {
  /** A short name for logs and events: "websocket", "sse". */
  readonly name: string;
  /** The connectionType setup must declare for a session this transport carries. */
  readonly connectionType: ConnectionType;
  /** Tell whether this platform can run the transport (a global WebSocket exists, ...). */
  available(): boolean;
  /** Start one connection attempt. */
  open(target: TransportTarget, sink: TransportSink): TransportConnection;
}
