"""asyncio client for VORA: setup, subscriptions and an event stream that resumes across drops, each event once."""

from vora_client.client import ConnectionType, PushRegistration, Session, TokenProvider, VoraClient
from vora_client.errors import (
    BadRequest,
    Conflict,
    ConnectionFailed,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
    StreamClosed,
    TooManyRequests,
    Unauthorized,
    VoraError,
)
from vora_client.reconnect import Next, ReconnectPolicy
from vora_client.stream import Envelope, EventStream, State, StateChange, connect, event_position
from vora_client.transport import Transport, WebSocketTransport, websocket_url

__all__ = [
    "BadRequest",
    "Conflict",
    "ConnectionFailed",
    "ConnectionType",
    "Envelope",
    "EventStream",
    "Forbidden",
    "Next",
    "NotFound",
    "PayloadTooLarge",
    "PushRegistration",
    "ReconnectPolicy",
    "ServiceUnavailable",
    "Session",
    "State",
    "StateChange",
    "StreamClosed",
    "TokenProvider",
    "TooManyRequests",
    "Transport",
    "Unauthorized",
    "VoraClient",
    "VoraError",
    "WebSocketTransport",
    "connect",
    "event_position",
    "websocket_url",
]
