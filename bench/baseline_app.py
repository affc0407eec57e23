"""The baseline: a bare Flask + flask-sock app that answers like VORA without doing VORA's work.

It serves the same JSON on the same paths, under the same gunicorn and gevent settings, so the
ratio VORA/baseline isolates what VORA adds: Connexion validation, JWT verification, Redis, logs,
the per-socket outbox and the stream. Its WebSocket relays a Redis channel to the sockets of an
identity, and with lastEventId replays VORA's own stream of that identity. Its event stream
(/vora/sse) is Flask's own idiom for Server-Sent Events: a streamed response whose generator
writes what the channel relays (`data:` lines, no `id:`, no replay).
"""

from __future__ import annotations

import base64
import json
import os
import queue
import secrets
import threading
from collections import defaultdict
from typing import Any

import redis
from flask import Flask, Response, request
from flask_sock import Sock

from vora.store.codec import text
from vora.store.keys import event_stream

CHANNEL = "bench:baseline:events"
PING_INTERVAL = 20.0  # VORA_WS_PING_INTERVAL's default
MAX_MESSAGE_BYTES = 4096  # VORA_WS_MAX_MESSAGE_BYTES's default
REPLAY_LIMIT = 10_000
HEARTBEAT_INTERVAL = 30.0  # VORA_WS_HEARTBEAT_INTERVAL's default: an idle stream writes a comment this often


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class FanOut:
    """One Redis subscription per worker, relaying each message to the local sockets of its identity."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._sockets: dict[str, set[Any]] = defaultdict(set)
        self._ready = threading.Event()
        threading.Thread(target=self._read, name="baseline-fanout", daemon=True).start()

    def wait_ready(self, timeout: float) -> bool:
        """Wait until the subscription is confirmed."""
        return self._ready.wait(timeout)

    def register(self, identity: str, ws: Any) -> None:
        """Relay the identity's messages to this socket."""
        self._sockets[identity].add(ws)

    def unregister(self, identity: str, ws: Any) -> None:
        """Stop relaying to this socket."""
        self._sockets[identity].discard(ws)

    def _read(self) -> None:
        pubsub = self._client.pubsub(ignore_subscribe_messages=False)
        pubsub.subscribe(CHANNEL)
        while True:
            message = pubsub.get_message(timeout=1.0)
            if message is None:
                continue
            if message["type"] == "subscribe":
                self._ready.set()
                continue
            identity, _, payload = text(message["data"]).partition(" ")
            for ws in list(self._sockets.get(identity, ())):
                try:
                    ws.send(payload)
                except Exception:  # noqa: BLE001, S112 - a closed socket leaves on its own
                    continue


class StreamOutbox:
    """What the fan-out relayed to one event stream, until the stream's greenlet writes it."""

    def __init__(self) -> None:
        self.pending: queue.Queue[str] = queue.Queue()

    def send(self, payload: str) -> None:
        """Queue one envelope for the stream."""
        self.pending.put(payload)


def create_app() -> Flask:
    """Build the baseline app from BENCH_REDIS_URL and BENCH_IDENTITIES."""
    app = Flask(__name__)
    client = redis.Redis.from_url(os.environ["BENCH_REDIS_URL"])
    identities = sorted(filter(None, os.environ.get("BENCH_IDENTITIES", "910111000").split(",")))
    app.config["SOCK_SERVER_OPTIONS"] = {"ping_interval": PING_INTERVAL, "max_message_size": MAX_MESSAGE_BYTES}
    sock = Sock(app)
    fan_out = FanOut(client)

    @app.get("/vora/identity")
    def list_identities() -> dict[str, Any]:
        return {"identities": identities}

    @app.post("/vora/identity/setup")
    def setup() -> dict[str, Any]:
        body = request.get_json()
        token = f"v1.{_b64(str(body['identity']).encode())}.{_b64(secrets.token_bytes(32))}"
        return {"webSocketToken": token}

    @app.get("/vora/health/liveness")
    def liveness() -> Response:
        return Response(status=204)

    @app.get("/vora/sse")
    def events_stream() -> Response:
        identity = request.args.get("identity", "")
        fan_out.wait_ready(5.0)
        outbox = StreamOutbox()
        fan_out.register(identity, outbox)

        def body() -> Any:
            try:
                yield b"retry: 1000\n\n"
                while True:
                    try:
                        payload = outbox.pending.get(timeout=HEARTBEAT_INTERVAL)
                    except queue.Empty:
                        yield b": heartbeat\n\n"  # a gone client shows only when a write fails
                        continue
                    yield f"data: {payload}\n\n".encode()
            finally:
                fan_out.unregister(identity, outbox)

        headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        return Response(body(), mimetype="text/event-stream", headers=headers)

    @sock.route("/vora/ws")  # type: ignore[misc] # flask_sock is untyped
    def events_socket(ws: Any) -> None:
        identity = request.args.get("identity", "")
        last_event_id = request.args.get("lastEventId")
        fan_out.wait_ready(5.0)
        if last_event_id:
            entries = client.xrange(event_stream(identity), min=f"({last_event_id}", max="+", count=REPLAY_LIMIT)
            for entry_id, fields in entries:  # type: ignore[union-attr] # redis-py types sync replies as Awaitable | Any
                decoded = {text(k): text(v) for k, v in fields.items()}
                envelope = {
                    "eventId": text(entry_id),
                    "sequenceNumber": int(decoded["seq"]),
                    "identity": identity,
                    "type": decoded["type"],
                    "timestamp": decoded["ts"],
                    "data": json.loads(decoded["data"]),
                }
                ws.send(json.dumps(envelope))
        fan_out.register(identity, ws)
        try:
            while ws.connected:
                ws.event.wait(timeout=30)
                ws.event.clear()
                ws.input_buffer.clear()
        finally:
            fan_out.unregister(identity, ws)

    return app
