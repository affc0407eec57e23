"""The telephony examples (Node, Java) against a real VORA: published events reach a socket once; signatures hold."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from redis.cluster import RedisCluster

from testbed.ports import free_port
from testbed.vora_server import RunningServer, running_server
from testbed.wait import wait_for
from testbed.webhooks import WebhookReceiver
from tests.harness import Nginx, RedisCluster3, RedisServer, nginx_or_skip
from tests.harness.examples import START_TIMEOUT, ExampleProcess, Line, start_receiver
from tests.harness.processes import frozen
from tests.harness.push import HOLDUP_TIMEOUT, WAIT, ring
from tests.harness.redis_busy import busy_with_a_script
from tests.harness.server_api import SERVER_KEY
from tests.harness.tokens import TokenFactory
from tests.harness.ws_client import Client, make_publisher, open_client
from vora.push.webhooks import DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER, sign
from vora.store import keys
from vora.store.client import connect as connect_redis

pytestmark = [pytest.mark.slow, pytest.mark.examples, pytest.mark.ws, pytest.mark.server_api]

USER = "ana"
IDENTITY = "910555000"
GATEWAY_SECRET = "gateway-secret-" + "g" * 24
CALLBACK_SECRET = "callback-secret-" + "c" * 24
DEVICE = {"platform": "fcm", "deviceToken": "d" * 64, "appId": "com.example.vora"}


def presence(status: str, **extra: str) -> dict[str, object]:
    """Return a publish command for the example: a presence event of the identity."""
    return {"identity": IDENTITY, "type": "presence", "data": {"status": status}, **extra}


def settled(line: Line) -> bool:
    """Tell whether a publisher line settles an event (anything but a retry)."""
    return line.get("outcome") not in {None, "retrying"}


@contextlib.contextmanager
def serving(env: dict[str, str], redis_url: str, log_dir: Path) -> Iterator[RunningServer]:
    """Serve VORA on a Redis where the user owns the identity."""
    with contextlib.closing(connect_redis(redis_url, timeout=5.0)) as client:
        client.sadd(keys.user_identities(USER), IDENTITY)
    with running_server({**env, "VORA_REDIS_URL": redis_url}, log_dir) as server:
        yield server


def open_socket(server: RunningServer, make_token: TokenFactory, body: dict[str, object] | None = None) -> str:
    """Open a session on the identity through the REST API and return its WebSocket token."""
    response = requests.post(
        f"{server.base_url}/identity/setup",
        json=body or {"connectionType": "WebSocket", "identity": IDENTITY},
        headers={"Authorization": f"Bearer {make_token(USER)}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    token: str = response.json()["webSocketToken"]
    return token


def publisher_for(language: str, server: RunningServer, **env: str) -> ExampleProcess:
    """Start the publisher example of a language against a server's server API."""
    return ExampleProcess(
        language,
        "publisher",
        {"VORA_SERVER_API": server.server_api_url, "VORA_SERVER_API_KEY": SERVER_KEY, "VORA_PUBLISH_BACKOFF_MS": "100"}
        | env,
    )


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """Run a redis-server of this test's own, which the test may stop and resume."""
    with RedisServer() as redis_server:
        yield redis_server


@pytest.fixture
def socket_of(make_token: TokenFactory) -> Iterator[Callable[[RunningServer], Client]]:
    """Open a real WebSocket client on a new session of the identity, and close it after the test."""
    opened: list[Client] = []

    def open_one(server: RunningServer) -> Client:
        client = open_client(server.ws_url, open_socket(server, make_token))
        opened.append(client)
        assert client.next(skip=("heartbeat",))["type"] == "channelOpened"
        return client

    yield open_one
    for client in opened:
        client.close()


def test_published_events_and_a_batch_reach_a_socket_in_order_once_and_a_bad_event_is_not_retried(
    language: str,
    api_env: dict[str, str],
    own_redis: RedisServer,
    socket_of: Callable[[RunningServer], Client],
    tmp_path: Path,
) -> None:
    """Single events and a batch arrive in order, once; a bad event or batch item is refused 400 and never retried."""
    with serving(api_env, own_redis.url, tmp_path) as server, publisher_for(language, server) as publisher:
        client = socket_of(server)
        publisher.send(presence("busy"))
        publisher.send(presence("asleep"))  # not a presence status: a 400, which no retry can fix
        publisher.send({"events": [presence("away"), presence("nope"), presence("available")]})
        outcomes = [publisher.next_line(settled, START_TIMEOUT) for _ in range(5)]

        assert [line["outcome"] for line in outcomes] == ["published", "refused", "published", "refused", "published"]
        assert [line.get("index") for line in outcomes[2:]] == [0, 1, 2]
        assert outcomes[1]["status"] == outcomes[3]["status"] == 400
        assert "status" in outcomes[1]["message"]
        assert len({line["idempotencyKey"] for line in outcomes}) == 5  # a key of its own per event
        published = [outcomes[0], outcomes[2], outcomes[4]]
        received = client.events(3)
        assert [(e["eventId"], e["data"]["status"]) for e in received] == [
            (published[0]["eventId"], "busy"),
            (published[1]["eventId"], "away"),
            (published[2]["eventId"], "available"),
        ]
        assert [line for line in publisher.seen if line["outcome"] == "retrying"] == []
        assert int(own_redis.execute("XLEN", keys.event_stream(IDENTITY))) == 3


def test_a_503_from_a_hung_redis_is_retried_with_the_same_key_and_the_event_arrives_once(
    language: str,
    api_env: dict[str, str],
    own_redis: RedisServer,
    socket_of: Callable[[RunningServer], Client],
    tmp_path: Path,
) -> None:
    """A 503 while Redis hangs (may have been published) is retried with the same keys: duplicates, delivered once."""
    env = {**api_env, "VORA_REDIS_TIMEOUT": "1"}
    with serving(env, own_redis.url, tmp_path) as server, publisher_for(language, server) as publisher:
        client = socket_of(server)
        publisher.send(presence("busy"))  # also loads the keyed publish script before Redis hangs
        first = publisher.next_line(settled, START_TIMEOUT)
        with frozen(own_redis.pid):  # Redis keeps its connections but answers nothing
            publisher.send(presence("away"))
            retrying = publisher.next_line(timeout=WAIT)
        assert (retrying["outcome"], retrying["status"]) == ("retrying", 503), retrying
        assert "may or may not have been published" in retrying["reason"]
        assert retrying["waitMs"] >= 1000  # Retry-After: 1
        second = publisher.next_line(settled, WAIT)
        assert second["outcome"] == "duplicate", second  # Redis ran the write it had received: the retry found it
        assert second["idempotencyKey"] == retrying["idempotencyKey"]
        publisher.send(presence("available"))
        third = publisher.next_line(settled, WAIT)
        with frozen(own_redis.pid):
            publisher.send({"events": [presence("busy"), presence("away")]})
            batch_retrying = publisher.next_line(timeout=WAIT)
        assert (batch_retrying["outcome"], batch_retrying["status"]) == ("retrying", 503), batch_retrying
        assert batch_retrying["indexes"] == [0, 1]
        batch = [publisher.next_line(settled, WAIT) for _ in range(2)]
        assert [(line["outcome"], line["index"]) for line in batch] == [("duplicate", 0), ("duplicate", 1)]

        received = client.events(5, timeout=WAIT)
        assert [(e["eventId"], e["data"]["status"]) for e in received] == [
            (first["eventId"], "busy"),
            (second["eventId"], "away"),
            (third["eventId"], "available"),
            (batch[0]["eventId"], "busy"),
            (batch[1]["eventId"], "away"),
        ]
        assert int(own_redis.execute("XLEN", keys.event_stream(IDENTITY))) == 5


def test_a_503_not_published_while_redis_is_busy_is_retried_after_retry_after_and_published_once(
    language: str,
    api_env: dict[str, str],
    own_redis: RedisServer,
    socket_of: Callable[[RunningServer], Client],
    tmp_path: Path,
) -> None:
    """While Redis is busy running a script VORA answers 503 (not published, Retry-After 1); the retry publishes it."""
    with serving(api_env, own_redis.url, tmp_path) as server, publisher_for(language, server) as publisher:
        client = socket_of(server)
        publisher.send(presence("busy"))
        first = publisher.next_line(settled, START_TIMEOUT)
        with busy_with_a_script(own_redis, WAIT):
            publisher.send(presence("away"))
            retrying = publisher.next_line(timeout=WAIT)
        assert (retrying["outcome"], retrying["status"]) == ("retrying", 503), retrying
        assert "busy running a script" in retrying["reason"]
        assert retrying["waitMs"] >= 1000  # Retry-After: 1
        second = publisher.next_line(settled, WAIT)
        assert (second["outcome"], second["idempotencyKey"]) == ("published", retrying["idempotencyKey"])

        received = client.events(2, timeout=WAIT)
        assert [e["eventId"] for e in received] == [first["eventId"], second["eventId"]]
        assert int(own_redis.execute("XLEN", keys.event_stream(IDENTITY))) == 2


def test_a_connection_failure_is_retried_with_the_same_key_a_bounded_number_of_times(language: str) -> None:
    """With nothing listening, the publisher retries with the same key, backing off, and gives up after its attempts."""
    closed = f"http://127.0.0.1:{free_port()}/vora/server/v1"
    env = {"VORA_SERVER_API": closed, "VORA_SERVER_API_KEY": SERVER_KEY, "VORA_PUBLISH_MAX_ATTEMPTS": "3"}
    with ExampleProcess(language, "publisher", env | {"VORA_PUBLISH_BACKOFF_MS": "100"}) as publisher:
        publisher.send(presence("busy", idempotencyKey="pbx-presence-1"))
        failed = publisher.next_line(settled, START_TIMEOUT)
        retries = [line for line in publisher.seen if line["outcome"] == "retrying"]
    assert (failed["outcome"], failed["status"], failed["idempotencyKey"]) == ("failed", 0, "pbx-presence-1")
    assert [(line["status"], line["idempotencyKey"]) for line in retries] == [(0, "pbx-presence-1")] * 2
    assert 50 <= retries[0]["waitMs"] <= 100 <= retries[1]["waitMs"] <= 200  # jittered, doubling


def test_a_publish_sent_before_vora_listens_is_retried_with_the_same_key_until_it_is_published(
    language: str, api_env: dict[str, str], own_redis: RedisServer, tmp_path: Path
) -> None:
    """Connections refused until the server API listens are retried with the event's key; then it is published once."""
    port = free_port()
    api = f"http://127.0.0.1:{port}/vora/server/v1"
    env = {"VORA_SERVER_API": api, "VORA_SERVER_API_KEY": SERVER_KEY, "VORA_PUBLISH_MAX_ATTEMPTS": "12"}
    with ExampleProcess(language, "publisher", env | {"VORA_PUBLISH_BACKOFF_MS": "100"}) as publisher:
        publisher.send(presence("busy"))
        refused = publisher.next_line(timeout=START_TIMEOUT)
        assert (refused["outcome"], refused["status"]) == ("retrying", 0), refused
        with serving({**api_env, "VORA_SERVER_API_PORT": str(port)}, own_redis.url, tmp_path):
            published = publisher.next_line(settled, START_TIMEOUT)
        retries = [line for line in publisher.seen if line["outcome"] == "retrying"]
    assert (published["outcome"], published["idempotencyKey"]) == ("published", refused["idempotencyKey"])
    assert {line["idempotencyKey"] for line in retries} == {refused["idempotencyKey"]}
    assert int(own_redis.execute("XLEN", keys.event_stream(IDENTITY))) == 1


@pytest.mark.topology
def test_a_502_or_504_from_nginx_in_front_of_vora_is_retried_with_the_same_key_and_the_event_arrives_once(
    language: str,
    api_env: dict[str, str],
    own_redis: RedisServer,
    socket_of: Callable[[RunningServer], Client],
    tmp_path: Path,
) -> None:
    """Behind nginx, a 502 (VORA down) and a 504 (VORA frozen) are retried with the event's key; each arrives once."""
    api_port = free_port()
    behind = {**api_env, "VORA_REDIS_URL": own_redis.url, "VORA_SERVER_API_PORT": str(api_port)}
    with (
        serving(api_env, own_redis.url, tmp_path) as sockets,  # another instance on the same Redis holds the socket
        Nginx([api_port], read_timeout_s=1.0, binary=nginx_or_skip()) as proxy,
        publisher_for(
            language, sockets, VORA_SERVER_API=f"{proxy.url}/vora/server/v1", VORA_PUBLISH_MAX_ATTEMPTS="12"
        ) as publisher,
    ):
        client = socket_of(sockets)
        publisher.send(presence("busy"))  # nothing listens behind nginx yet: 502
        bad_gateway = publisher.next_line(timeout=START_TIMEOUT)
        assert (bad_gateway["outcome"], bad_gateway["status"]) == ("retrying", 502), bad_gateway
        with running_server(behind, tmp_path) as api:
            first = publisher.next_line(settled, START_TIMEOUT)
            # A duplicate when a retry reached the listener before its worker served (504) and was stored later.
            assert first["outcome"] in {"published", "duplicate"}, publisher.seen
            assert first["idempotencyKey"] == bad_gateway["idempotencyKey"]
            (worker,) = api.worker_pids()
            with frozen(worker):  # the kernel still accepts its connections; nobody answers them
                publisher.send(presence("away"))
                timed_out = publisher.next_line(timeout=WAIT)
            assert (timed_out["outcome"], timed_out["status"]) == ("retrying", 504), timed_out
            second = publisher.next_line(settled, WAIT)
        retries = [line for line in publisher.seen if line["outcome"] == "retrying"]

        # The request nginx gave up on was read and stored once VORA went on: the retry found it.
        assert (second["outcome"], second["idempotencyKey"]) == ("duplicate", timed_out["idempotencyKey"])
        assert {line["status"] for line in retries if line["idempotencyKey"] == first["idempotencyKey"]} <= {502, 504}
        assert {line["status"] for line in retries if line["idempotencyKey"] == second["idempotencyKey"]} == {504}
        received = client.events(2, timeout=WAIT)
        assert [(e["eventId"], e["data"]["status"]) for e in received] == [
            (first["eventId"], "busy"),
            (second["eventId"], "away"),
        ]
        assert int(own_redis.execute("XLEN", keys.event_stream(IDENTITY))) == 2


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster3]:
    """Run a three-master Redis Cluster for the module's batch journeys."""
    with RedisCluster3() as running:
        yield running


def owner_port(client: RedisCluster, identity: str) -> int:
    """Return the port of the master that holds an identity's events."""
    port: int = client.get_node_from_key(keys.event_stream(identity)).port
    return port


@pytest.mark.topology
def test_a_batch_item_one_busy_cluster_shard_answers_503_is_retried_alone_with_its_key_and_arrives_once(
    language: str,
    api_env: dict[str, str],
    cluster: RedisCluster3,
    make_token: TokenFactory,
    tmp_path: Path,
) -> None:
    """With one Cluster master busy, its batch item alone is a 503, retried alone with its key; each arrives once."""
    with contextlib.closing(cluster.client()) as client:
        home = owner_port(client, IDENTITY)
        other = next(f"910555{n:03d}" for n in range(1, 1000) if owner_port(client, f"910555{n:03d}") != home)
        client.delete(keys.event_stream(IDENTITY), keys.event_stream(other))
        client.sadd(keys.user_identities(USER), other)
        busy = next(node for node in cluster.nodes if node.port == owner_port(client, other))
        with (
            serving(api_env, cluster.url, tmp_path) as server,
            publisher_for(language, server) as publisher,
            contextlib.closing(open_client(server.ws_url, open_socket(server, make_token))) as mine,
            contextlib.closing(
                open_client(
                    server.ws_url, open_socket(server, make_token, {"connectionType": "WebSocket", "identity": other})
                )
            ) as theirs,
        ):
            for socket in (mine, theirs):
                assert socket.next(skip=("heartbeat",))["type"] == "channelOpened"
            publisher.send({"events": [presence("busy"), {**presence("busy"), "identity": other}]})  # loads the script
            warm = [publisher.next_line(settled, START_TIMEOUT) for _ in range(2)]
            assert [line["outcome"] for line in warm] == ["published"] * 2
            assert [socket.next()["eventId"] for socket in (mine, theirs)] == [line["eventId"] for line in warm]
            with busy_with_a_script(busy, WAIT):
                publisher.send(
                    {"events": [presence("busy"), {**presence("away"), "identity": other}, presence("available")]}
                )
                retrying = publisher.next_line(timeout=START_TIMEOUT)
            assert (retrying["outcome"], retrying.get("indexes")) == ("retrying", [1]), retrying
            # The retry line says why: the item's own 503 and its message, not the batch's 200.
            assert retrying["status"] == 503, retrying
            assert "busy running a script" in retrying["reason"], retrying
            batch = [publisher.next_line(settled, WAIT) for _ in range(3)]
            retries = [line for line in publisher.seen if line["outcome"] == "retrying"]

            assert [(line["outcome"], line["index"]) for line in batch] == [
                ("published", 0),
                ("published", 1),
                ("published", 2),
            ]
            assert {tuple(line["indexes"]) for line in retries} == {(1,)}  # never the items that were published
            assert len({line["idempotencyKey"] for line in batch}) == 3
            assert [(e["eventId"], e["data"]["status"]) for e in mine.events(2, timeout=WAIT)] == [
                (batch[0]["eventId"], "busy"),
                (batch[2]["eventId"], "available"),
            ]
            assert [e["eventId"] for e in theirs.events(1, timeout=WAIT)] == [batch[1]["eventId"]]
            assert (client.xlen(keys.event_stream(IDENTITY)), client.xlen(keys.event_stream(other))) == (3, 2)


def post_signed(url: str, event: str, delivery: str, body: bytes, signature: str) -> int:
    """Post a webhook as VORA would, with the signature given, and return the status."""
    headers = {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: signature,
        DELIVERY_HEADER: delivery,
        EVENT_HEADER: event,
    }
    return requests.post(url, data=body, headers=headers, timeout=10).status_code


@pytest.mark.push
def test_the_receiver_verifies_vora_s_real_push_and_readiness_and_refuses_tampered_or_stale_ones(
    language: str, ws_env: dict[str, str], own_redis: RedisServer, make_token: TokenFactory, tmp_path: Path
) -> None:
    """VORA's real push and ready signal are verified and handled; forged, stale or repeated posts are not."""
    receiver, base = start_receiver(language, GATEWAY_SECRET, CALLBACK_SECRET)
    env = {
        **ws_env,
        "VORA_PUSH_GATEWAY_URL": f"{base}/push",
        "VORA_PUSH_SECRET": GATEWAY_SECRET,
        "VORA_HOLDUP_CALLBACK_URL": f"{base}/readiness",
        "VORA_HOLDUP_CALLBACK_SECRET": CALLBACK_SECRET,
        "VORA_PUSH_TIMEOUT": "2",
        "VORA_HOLDUP_TIMEOUT": str(HOLDUP_TIMEOUT),
    }
    with receiver, serving(env, own_redis.url, tmp_path) as server:
        setup = {"connectionType": "WebSocket", "identity": IDENTITY, "holdUpMode": True, "push": DEVICE}
        token = open_socket(server, make_token, setup)
        with contextlib.closing(own_redis.client()) as redis_client:
            published = ring(make_publisher(redis_client), IDENTITY, "call-7")

        pushed = receiver.next_line(lambda line: "handled" in line, WAIT)
        assert pushed["handled"] == "pushNotification"
        assert (pushed["body"]["callId"], pushed["body"]["eventId"]) == ("call-7", published.event_id)
        assert pushed["delivery"] == pushed["body"]["pushId"]
        client = open_client(server.ws_url, token)  # the woken app connects
        try:
            assert client.next()["eventId"] == published.event_id
            ready = receiver.next_line(lambda line: "handled" in line, WAIT)
        finally:
            client.close()
        assert ready["handled"] == "holdUpReady"
        assert (ready["body"]["callId"], ready["delivery"]) == ("call-7", ready["body"]["signalId"])
        assert [line for line in receiver.seen if "refused" in line or "duplicate" in line] == []

        body = json.dumps({**ready["body"], "signalId": "e" * 32}).encode()
        now = int(time.time())
        readiness = f"{base}/readiness"
        tampered = body.replace(b"call-7", b"call-8")
        assert post_signed(readiness, "holdUpReady", "e" * 32, tampered, sign(CALLBACK_SECRET, now, body)) == 401
        stale = now - 301
        assert post_signed(readiness, "holdUpReady", "e" * 32, body, sign(CALLBACK_SECRET, stale, body)) == 401
        assert post_signed(readiness, "holdUpReady", "e" * 32, body, sign(GATEWAY_SECRET, now, body)) == 401
        assert post_signed(f"{base}/push", "pushNotification", "e" * 32, body, sign(CALLBACK_SECRET, now, body)) == 401
        assert post_signed(readiness, "holdUpReady", "e" * 32, body, sign(CALLBACK_SECRET, now - 290, body)) == 204
        assert post_signed(readiness, "holdUpReady", "e" * 32, body, sign(CALLBACK_SECRET, now, body)) == 200

        wait_for(lambda: receiver.lines.qsize() >= 6, WAIT, what="the receiver's report lines")
        lines = receiver.lines_now()
        assert [next(iter(line)) for line in lines] == ["refused"] * 4 + ["handled", "duplicate"]
        assert (lines[4]["delivery"], lines[5]["duplicate"]) == ("e" * 32, "e" * 32)


@pytest.mark.push
def test_a_push_the_receiver_cannot_verify_is_refused_401_and_vora_signals_push_failed(
    language: str, ws_env: dict[str, str], own_redis: RedisServer, make_token: TokenFactory, tmp_path: Path
) -> None:
    """VORA's push signed with another secret is refused 401, not handled; VORA then signals pushFailed."""
    receiver, base = start_receiver(language, "not-" + GATEWAY_SECRET, CALLBACK_SECRET)
    with WebhookReceiver(CALLBACK_SECRET) as callback:
        env = {
            **ws_env,
            "VORA_PUSH_GATEWAY_URL": f"{base}/push",
            "VORA_PUSH_SECRET": GATEWAY_SECRET,
            "VORA_HOLDUP_CALLBACK_URL": callback.url,
            "VORA_HOLDUP_CALLBACK_SECRET": CALLBACK_SECRET,
            "VORA_PUSH_MAX_ATTEMPTS": "2",
            "VORA_PUSH_BACKOFF": "0.05",
        }
        with receiver, serving(env, own_redis.url, tmp_path) as server:
            setup = {"connectionType": "WebSocket", "identity": IDENTITY, "holdUpMode": True, "push": DEVICE}
            open_socket(server, make_token, setup)
            with contextlib.closing(own_redis.client()) as redis_client:
                ring(make_publisher(redis_client), IDENTITY, "call-9")
            refused = receiver.next_line(lambda line: "refused" in line, WAIT)
            not_ready = callback.next_accepted(lambda r: r.body.get("callId") == "call-9", WAIT)
        assert refused == {"refused": 401, "path": "/push"}
        assert (not_ready.event, not_ready.body["reason"]) == ("holdUpNotReady", "pushFailed")
        assert not [line for line in receiver.seen if "handled" in line]
