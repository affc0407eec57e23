"""Measure Redis memory per session and per retained event, for docs/operations.md sizing."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

from testbed.ports import free_port
from vora.core.catalog import ALL_SCOPES
from vora.core.settings import DEFAULT_SPEC_DIR
from vora.events.publisher import EventCatalog, EventPublisher
from vora.sessions.service import hash_token, mint_websocket_token
from vora.store.directory import Directory
from vora.store.sessions import NewSession, SessionStore
from vora.store.streams import StreamStore

SESSIONS = 20_000
EVENTS = 100_000
IDENTITIES = 1_000


def used(client: redis.Redis) -> int:
    """Return Redis' used_memory in bytes."""
    return int(client.info("memory")["used_memory"])  # type: ignore[index] # redis-py types sync replies as Awaitable | Any


def main() -> None:
    """Start a private redis-server, fill it, and print bytes per session and per event as JSON."""
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        server = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                tmp,
            ],
            stdout=subprocess.DEVNULL,
        )
        try:
            client = redis.Redis(port=port)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    time.sleep(0.05)
            store = SessionStore(client, ttl_seconds=3600, max_per_user=5)
            directory = Directory(client)
            base = used(client)
            for n in range(SESSIONS):
                identity = str(900_000_000 + n // 2)  # desktop + mobile per identity
                if n % 2 == 0:
                    directory.add(f"user-{n // 2}", [identity])
                token = mint_websocket_token(identity)
                store.create(
                    identity,
                    f"{n:032x}",
                    hash_token(token),
                    NewSession(f"user-{n // 2}", "WebSocket", False, frozenset(ALL_SCOPES), "*"),
                )
            per_session = (used(client) - base) / SESSIONS
            client.flushall()
            base = used(client)
            publisher = EventPublisher(
                EventCatalog(DEFAULT_SPEC_DIR), StreamStore(client, max_length=1_000_000, max_age_seconds=86_400)
            )
            for n in range(EVENTS):
                publisher.publish(
                    str(910_000_000 + n % IDENTITIES),
                    "callRinging",
                    {"callId": f"c-{n:08d}", "direction": "inbound", "from": "+34602128708", "to": "910111000"},
                )
            per_event = (used(client) - base) / EVENTS
            version = client.info("server")["redis_version"]  # type: ignore[index] # redis-py types sync replies as Awaitable | Any
        finally:
            server.terminate()
            server.wait(timeout=10)
    json.dump(
        {
            "redis_version": version,
            "sessions": SESSIONS,
            "bytes_per_session_with_directory": round(per_session),
            "events": EVENTS,
            "identities": IDENTITIES,
            "bytes_per_retained_event": round(per_event),
        },
        sys.stdout,
        indent=2,
    )
    print()


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    main()
