"""Fixtures for WebSocket tests: real gunicorn servers, a real client, the AsyncAPI contract."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import redis
import requests
import websocket

from tests.conftest import AUDIENCE, ISSUER, TokenFactory
from tests.server import RunningServer, running_server
from vora.events import EventCatalog, EventPublisher, load_asyncapi
from vora.settings import DEFAULT_SPEC_DIR
from vora.store.streams import StreamStore

pytestmark = [pytest.mark.slow, pytest.mark.ws]

IDENTITY = "910111000"
ServerFactory = Callable[..., contextlib.AbstractContextManager[RunningServer]]


class EventContract:
    """Validate every frame the server sends against its AsyncAPI message schema."""

    def __init__(self) -> None:
        document = load_asyncapi(DEFAULT_SPEC_DIR)
        self._components = document["components"]
        self._validators: dict[str, jsonschema.Draft7Validator] = {}

    def check(self, envelope: dict[str, Any]) -> None:
        """Raise unless the envelope matches the message schema of its type."""
        event_type = envelope.get("type")
        assert event_type in self._components["messages"], f"unknown event type {event_type!r}"
        if event_type not in self._validators:
            payload_ref = self._components["messages"][event_type]["payload"]["$ref"]
            self._validators[event_type] = jsonschema.Draft7Validator(
                {"$ref": payload_ref, "components": self._components},
                format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER,
            )
        self._validators[event_type].validate(envelope)


CONTRACT = EventContract()


class Client:
    """A real WebSocket client that checks each event against the contract."""

    def __init__(self, ws: websocket.WebSocket) -> None:
        self.ws = ws
        self.received: list[dict[str, Any]] = []

    def next(self, skip: tuple[str, ...] = ("heartbeat",), timeout: float = 10.0) -> dict[str, Any]:
        """Return the next event whose type is not skipped."""
        self.ws.settimeout(timeout)
        while True:
            frame = self.ws.recv()
            assert frame, "the server closed the socket"
            envelope: dict[str, Any] = json.loads(frame)
            CONTRACT.check(envelope)
            self.received.append(envelope)
            if envelope["type"] not in skip:
                return envelope

    def events(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Return the next count stream events."""
        return [self.next(timeout=timeout) for _ in range(count)]

    def close_status(self, timeout: float = 10.0) -> int:
        """Read until the server closes the socket; return the close code."""
        self.ws.settimeout(timeout)
        while True:
            opcode, frame = self.ws.recv_data_frame(control_frame=True)
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                return int.from_bytes(frame.data[:2], "big") if len(frame.data) >= 2 else 1005
            if opcode == websocket.ABNF.OPCODE_TEXT:
                envelope = json.loads(frame.data)
                CONTRACT.check(envelope)
                self.received.append(envelope)

    def close(self) -> None:
        """Close from the client side and release the socket whatever state it is in."""
        with contextlib.suppress(Exception):
            self.ws.close(timeout=1)
        with contextlib.suppress(Exception):
            self.ws.shutdown()


@pytest.fixture(scope="module")
def ws_env(redis_proc: Any, key_dir: Path, dev_key_pem: bytes, jwks_path: Path) -> dict[str, str]:
    """Return the VORA_* variables of a WebSocket test server."""
    return {
        "VORA_REDIS_URL": f"redis://{redis_proc.host}:{redis_proc.port}/0",
        "VORA_DEV_KEY": str(key_dir / "dev-key.pem"),
        "VORA_OAUTH_JWKS": str(jwks_path),
        "VORA_OAUTH_ISSUER": ISSUER,
        "VORA_OAUTH_AUDIENCE": AUDIENCE,
        "VORA_WS_HEARTBEAT_INTERVAL": "5",
        "VORA_GRACEFUL_TIMEOUT": "10",
    }


@pytest.fixture(scope="module")
def server(ws_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """Serve VORA with one gevent worker for the whole module."""
    with running_server(ws_env, tmp_path_factory.mktemp("ws-server")) as running:
        yield running


@pytest.fixture
def make_server(ws_env: dict[str, str], tmp_path: Path) -> ServerFactory:
    """Start a dedicated server with some settings changed."""

    def start(workers: int = 1, **overrides: str) -> contextlib.AbstractContextManager[RunningServer]:
        env = {**ws_env, **{f"VORA_{k.upper()}": v for k, v in overrides.items()}}
        return running_server(env, tmp_path, workers=workers)

    return start


@pytest.fixture
def publisher(redisdb: redis.Redis, redis_proc: Any) -> EventPublisher:
    """Publish events the way the telephony side does."""
    client = redis.Redis(host=redis_proc.host, port=redis_proc.port)
    return EventPublisher(EventCatalog(DEFAULT_SPEC_DIR), StreamStore(client, 10_000, 86_400))


@pytest.fixture
def setup_token(redisdb: redis.Redis, make_token: TokenFactory) -> Callable[..., str]:
    """Provision a user, open a session through the REST API and return its WebSocket token."""
    from vora.store import keys

    def setup(
        server: RunningServer, subject: str = "alice", identity: str = IDENTITY, scopes: tuple[str, ...] | None = None
    ) -> str:
        redisdb.sadd(keys.user_identities(subject), identity)
        token = make_token(subject) if scopes is None else make_token(subject, scopes)
        response = requests.post(
            f"{server.base_url}/identity/setup",
            json={"connectionType": "WebSocket", "identity": identity},
            headers={"Authorization": f"Bearer {token}"},
            timeout=5,
        )
        assert response.status_code == 200, response.text
        ws_token: str = response.json()["webSocketToken"]
        return ws_token

    return setup


@pytest.fixture
def connect() -> Iterator[Callable[..., Client]]:
    """Open real WebSocket clients and close them after the test."""
    opened: list[Client] = []

    def open_socket(
        server: RunningServer, token: str | None, last_event_id: str | None = None, bearer: bool = False
    ) -> Client:
        query = []
        if token and not bearer:
            query.append(f"token={token}")
        if last_event_id:
            query.append(f"lastEventId={last_event_id}")
        url = server.ws_url + ("?" + "&".join(query) if query else "")
        headers = [f"Authorization: Bearer {token}"] if bearer else []
        client = Client(websocket.create_connection(url, timeout=10, header=headers))
        opened.append(client)
        return client

    yield open_socket
    for client in opened:
        client.close()


def bearer(make_token: TokenFactory, subject: str = "alice") -> dict[str, str]:
    """Return an Authorization header with an access token for a user."""
    return {"Authorization": f"Bearer {make_token(subject)}"}
