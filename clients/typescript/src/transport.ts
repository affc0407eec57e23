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

/**
 * A way to carry the event channel. The WebSocket transport is the one VORA serves today; the
 * Server-Sent Events transport of issue 21 implements the same interface.
 */
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
