"""asyncio client for VORA: setup, subscriptions and an event stream that resumes across drops, each event once."""

from vora_client.client import ConnectionType, PushRegistration, Session, TokenProvider, VoraClient
from vora_client.errors import (
    AccessTokenProviderFailed,
    AccessTokenRefused,
    BadRequest,
    Conflict,
    ConnectionFailed,
    Forbidden,
    MalformedFrame,
    NotFound,
    PayloadTooLarge,
    ProxyAuthenticationRequired,
    ServiceUnavailable,
    StreamClosed,
    TooManyRequests,
    Unauthorized,
    VoraError,
)
from vora_client.fallback import AutoTransport, Fallback, TransportChoice
from vora_client.proxy import ProxySetting, resolve_proxy
from vora_client.reconnect import Next, ReconnectPolicy
from vora_client.sse import Comment, EventStreamParser, EventStreamTransport, ServerSentEvent, event_stream_url
from vora_client.stream import Envelope, EventStream, State, StateChange, connect, event_position, is_event_id
from vora_client.transport import Closed, Connection, Transport, WebSocketTransport, websocket_url

__all__ = [
    "AccessTokenProviderFailed",
    "AccessTokenRefused",
    "AutoTransport",
    "BadRequest",
    "Closed",
    "Comment",
    "Conflict",
    "Connection",
    "ConnectionFailed",
    "ConnectionType",
    "Envelope",
    "EventStream",
    "EventStreamParser",
    "EventStreamTransport",
    "Fallback",
    "Forbidden",
    "MalformedFrame",
    "Next",
    "NotFound",
    "PayloadTooLarge",
    "ProxyAuthenticationRequired",
    "ProxySetting",
    "PushRegistration",
    "ReconnectPolicy",
    "ServerSentEvent",
    "ServiceUnavailable",
    "Session",
    "State",
    "StateChange",
    "StreamClosed",
    "TokenProvider",
    "TooManyRequests",
    "Transport",
    "TransportChoice",
    "Unauthorized",
    "VoraClient",
    "VoraError",
    "WebSocketTransport",
    "connect",
    "event_position",
    "event_stream_url",
    "is_event_id",
    "resolve_proxy",
    "websocket_url",
]
