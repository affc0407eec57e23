"""Races between a socket's handshake and the end of its session, opened deterministically with Redis' own pause."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
import requests

from testbed.wait import wait_for
from tests.harness.tokens import TokenFactory
from tests.harness.ws_client import Client, bearer, open_client
from tests.harness.ws_server import IDENTITY, ServerFactory
from vora.sessions.service import hash_token
from vora.store import keys, scripts

pytestmark = [pytest.mark.slow, pytest.mark.ws]

Setup = Callable[..., str]
# Big enough that Redis needs many event-loop turns (64 KiB each) to hand the admission its reply,
# while the logout's one-line bus notice goes out in the first: the worker reads the notice first.
ADMISSION_REPLY_PADDING = 8 * 1024 * 1024
PAUSE_MS = 20_000  # CLIENT PAUSE's own bound, far above the test's; CLIENT UNPAUSE ends it


def blocked_clients(client: redis.Redis) -> int:
    """Count the clients Redis holds back (a paused write command counts as blocked)."""
    info: dict[str, Any] = client.info("clients")  # type: ignore[assignment] # redis-py types sync replies as Awaitable | Any
    return int(info["blocked_clients"])


@contextlib.contextmanager
def writes_paused(client: redis.Redis) -> Iterator[None]:
    """Hold every write command (every script) in Redis until the block ends."""
    client.execute_command("CLIENT", "PAUSE", PAUSE_MS, "WRITE")
    try:
        yield
    finally:
        client.execute_command("CLIENT", "UNPAUSE")


def test_logout_that_lands_right_after_admission_closes_the_socket_at_once(
    make_server: ServerFactory, setup_token: Setup, make_token: TokenFactory, redisdb: redis.Redis
) -> None:
    """A logout run by Redis just after the socket's admission script closes that socket with channelTerminated."""
    # Long leases: only the logout's notice, never a renewal, can close the socket within the test.
    with make_server(ws_lease_interval="600", session_ttl="7200") as a, make_server(ws_lease_interval="600") as b:
        token = setup_token(a)
        session_id = redisdb.get(keys.websocket_token(IDENTITY, hash_token(token)))
        assert isinstance(session_id, bytes)
        redisdb.hset(keys.session(IDENTITY, session_id.decode()), "padding", "x" * ADMISSION_REPLY_PADDING)
        # Loaded now, both scripts run at their first EVALSHA: no NOSCRIPT round trip reorders them.
        for script in (scripts.ADMIT_SOCKET, scripts.END_SUBJECT_SESSIONS):
            redisdb.script_load(script)
        opened: dict[str, Any] = {}
        logged_out: dict[str, Any] = {}

        def open_socket() -> None:
            try:
                opened["client"] = open_client(b.ws_url, token, timeout=30)
            except Exception as exc:  # noqa: BLE001 - reported by the assertion below
                opened["error"] = exc

        def log_out() -> None:
            logged_out["response"] = requests.post(
                f"{a.base_url}/logout/{IDENTITY}", headers=bearer(make_token), timeout=30
            )

        handshake = threading.Thread(target=open_socket)
        logout = threading.Thread(target=log_out)
        with writes_paused(redisdb):
            handshake.start()
            wait_for(lambda: blocked_clients(redisdb) == 1, 10, what="the admission script to wait in Redis")
            logout.start()
            wait_for(lambda: blocked_clients(redisdb) == 2, 10, what="the logout script to wait behind it")
        # Unpaused: Redis runs the admission, then the logout, in the order they arrived.
        handshake.join(timeout=30)
        logout.join(timeout=30)
        assert logged_out["response"].status_code == 200, logged_out["response"].text
        assert "error" not in opened, opened.get("error")
        client: Client = opened["client"]
        try:
            event = client.next(timeout=5)  # a lease renewal would take 600 s
            assert event["type"] == "channelTerminated"
            assert event["data"] == {"reason": "logout"}
            assert client.close_status() == 1000
        finally:
            client.close()


def test_a_socket_closing_while_a_lease_renewal_waits_leaves_the_presence(
    make_server: ServerFactory, setup_token: Setup, redisdb: redis.Redis
) -> None:
    """A socket that detaches while a renewal that read it open waits in Redis is not counted open again by it."""
    aged, other = "910111000", "910111001"
    # Long leases: only the renewal the bus's loss asks for (renew_soon) runs within the test.
    with make_server(ws_lease_interval="600") as server:
        aged_token = setup_token(server, subject="alice", identity=aged)
        aged_session = redisdb.get(keys.websocket_token(aged, hash_token(aged_token)))
        assert isinstance(aged_session, bytes)
        # Past VORA_SESSION_MAX_AGE: the renewal ends this session first, a round trip before its own pipeline.
        redisdb.hset(keys.session(aged, aged_session.decode()), "createdAt", "1")
        aged_client = open_client(server.ws_url, aged_token)
        other_token = setup_token(server, subject="bob", identity=other)
        closing = open_client(server.ws_url, other_token)
        presence, other_token_key = keys.socket_presence(other), keys.websocket_token(other, hash_token(other_token))
        assert redisdb.zcard(presence) == 1
        try:
            with writes_paused(redisdb):
                redisdb.execute_command("CLIENT", "KILL", "TYPE", "pubsub")  # the bus resubscribes: renew now
                wait_for(lambda: blocked_clients(redisdb) == 1, 10, what="the renewal's end of the aged session")
                closing.close()
                wait_for(lambda: blocked_clients(redisdb) == 2, 10, what="the closed socket's detach to wait behind it")
                before = redisdb.pttl(other_token_key)
            # Unpaused: Redis ends the aged session, detaches the socket, then runs the renewal's pipeline.
            assert aged_client.next(timeout=10)["data"] == {"reason": "tokenExpired"}
            wait_for(lambda: redisdb.pttl(other_token_key) > before, 10, what="the renewal's pipeline to run")  # type: ignore[operator] # redis-py types sync replies as Awaitable | Any
            wait_for(lambda: redisdb.zcard(presence) == 0, 5, what="the closed socket to leave presence again")
        finally:
            aged_client.close()
