export { VoraClient } from "./client.js";
export type { AccessTokenProvider, ClientOptions, SetupOptions, TokenRequest } from "./client.js";
export {
  VoraAccessTokenProviderError,
  VoraAccessTokenRefusedError,
  VoraApiError,
  VoraConflictError,
  VoraError,
  VoraForbiddenError,
  VoraNetworkError,
  VoraNotFoundError,
  VoraUnauthorizedError,
  VoraUnavailableError,
  isErrorBody,
  parseRetryAfter,
} from "./errors.js";
export type { VoraErrorBody } from "./errors.js";
export { compareEventIds, isEventId } from "./event-id.js";
export { DEFAULT_RULES, afterDrop, afterRefusal, afterTermination, firstDelayMs, refusedDelayMs } from "./reconnect.js";
export type { NextStep, ReconnectRules } from "./reconnect.js";
export { EventStreamParser, parseClosedComment } from "./event-stream-parser.js";
export type { EventStreamHandlers, EventStreamMessage } from "./event-stream-parser.js";
export { eventStreamUrl, sseTransport } from "./sse-transport.js";
export type { FetchLike, SseTransportOptions } from "./sse-transport.js";
export { VoraStream, couldNotPass } from "./stream.js";
export type {
  CloseReason,
  ClosedInfo,
  FallbackInfo,
  LastEventIdStore,
  ReconnectingInfo,
  StateChange,
  StreamEvents,
  StreamOptions,
  StreamState,
  TransportChoice,
} from "./stream.js";
export type {
  HandshakeFailure,
  Transport,
  TransportClose,
  TransportConnection,
  TransportSink,
  TransportTarget,
} from "./transport.js";
export { socketUrl, webSocketTransport } from "./websocket-transport.js";
export type { WebSocketConstructor, WebSocketLike, WebSocketTransportOptions } from "./websocket-transport.js";
export type * from "./types.js";
