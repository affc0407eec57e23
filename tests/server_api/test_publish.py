"""Tests of publishing over the server API: one event, idempotency, batches, and every refusal writing nothing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from testbed.vora_server import RunningServer, running_server
from tests.harness.server_api import IDENTITY, ServerApiClient, assert_error_shape, stream_length
from tests.harness.ws_client import Client
from vora.store import keys

pytestmark = [pytest.mark.slow, pytest.mark.server_api]

RINGING = {"type": "callRinging", "data": {"callId": "c-1", "from": "+34602128708"}}
# Not RFC 3339 date-times as rfc3339-validator reads them: no 30 February, no leap second, no +24:00, no space.
BAD_TIMESTAMPS = ("2026-02-30T10:00:00Z", "2026-12-31T23:59:60Z", "2026-12-06T04:00:00+24:00", "2026-12-06 04:00:00Z")


def test_published_event_reaches_the_socket(
    api: ServerApiClient,
    server: RunningServer,
    setup_token: Callable[..., str],
    connect: Callable[..., Client],
) -> None:
    """A published event is answered with its eventId and sequenceNumber and arrives on the identity's socket."""
    client = connect(server, setup_token(server))
    response = api.publish(IDENTITY, {**RINGING, "timestamp": "2026-12-02T10:00:00.000Z"})
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["sequenceNumber"] == 1
    assert result["duplicate"] is False
    event = client.next()
    assert event["eventId"] == result["eventId"]
    assert event["type"] == "callRinging"
    assert event["data"] == RINGING["data"]
    assert event["timestamp"] == "2026-12-02T10:00:00.000Z"


@pytest.mark.parametrize(
    ("path_identity", "body", "message"),
    [
        (IDENTITY, {"type": "callExploded", "data": {"callId": "c"}}, "type: 'callExploded' is not one of"),
        (IDENTITY, {"type": "callRinging", "data": {}}, "data: 'callId' is a required property"),
        (IDENTITY, {"type": "presence", "data": {"status": "asleep"}}, "data.status: 'asleep' is not one of"),
        (IDENTITY, {"type": "callRinging", "data": {"callId": "c", "colour": "red"}}, "data: Additional properties"),
        (IDENTITY, {"type": "presence", "data": {"status": "busy"}, "extra": 1}, "Additional properties"),
        (IDENTITY, {"type": "presence", "data": {"status": "busy"}, "timestamp": "yesterday"}, "timestamp"),
        *[(IDENTITY, {**RINGING, "timestamp": t}, f"timestamp: '{t}' is not a 'date-time'") for t in BAD_TIMESTAMPS],
        (
            IDENTITY,
            {"type": "callEnded", "data": {"callId": "c", "durationSeconds": -1}},
            "durationSeconds: -1 is less than the minimum of 0",
        ),
        (
            IDENTITY,
            {"type": "callEnded", "data": {"callId": "c", "durationSeconds": 1.0}},
            "durationSeconds: 1.0 is not of type 'integer'",
        ),
        (IDENTITY, {"type": "presence", "data": {"status": "busy"}, "idempotencyKey": "a b"}, "idempotencyKey"),
        # A name cut inside an emoji's UTF-16 pair: JSON can escape the half, UTF-8 cannot carry it.
        (IDENTITY, {**RINGING, "data": {"callId": "c", "remoteName": "Ana \ud83d"}}, "at remoteName: a string"),
        (IDENTITY, {**RINGING, "data": {"callId": "\udc00c"}}, "at callId: a string holds a lone UTF-16 surrogate"),
        (IDENTITY, {"data": {"status": "busy"}}, "'type' is a required property"),
        (IDENTITY, [{"type": "presence", "data": {"status": "busy"}}], "an array of 1 items is not of type 'object'"),
        ("not{an}identity", {"type": "presence", "data": {"status": "busy"}}, "identity"),
        ("x" * 65, {"type": "presence", "data": {"status": "busy"}}, "identity"),
    ],
)
def test_bad_event_is_400_and_writes_nothing(
    api: ServerApiClient, redisdb: redis.Redis, path_identity: str, body: Any, message: str
) -> None:
    """An unknown type, a payload against its schema, a bad field or identity is a 400 naming the problem."""
    response = api.publish(path_identity, body)
    error = assert_error_shape(response, 400)
    assert message in error["message"], error["message"]
    assert redisdb.dbsize() == 0


@pytest.mark.parametrize("path", [f"/identities/{IDENTITY}/events", "/events/batch", "/directory/sync"])
def test_empty_body_is_400_saying_so(api: ServerApiClient, redisdb: redis.Redis, path: str) -> None:
    """A publish, batch or sync sent without a body is a 400 that says the body is empty and what to send."""
    response = api.request("POST", path, data=b"", headers={"Content-Type": "application/json"})
    assert assert_error_shape(response, 400)["message"] == "The request body is empty: send a JSON object"
    assert redisdb.dbsize() == 0


def test_bad_json_and_wrong_media_type_write_nothing(api: ServerApiClient, redisdb: redis.Redis) -> None:
    """A body that is not JSON is a 400, and one sent as text/plain a 415, both in the error shape."""
    path = f"/identities/{IDENTITY}/events"
    bad_json = api.request("POST", path, data=b'{"type": "presence",', headers={"Content-Type": "application/json"})
    assert "not valid JSON" in assert_error_shape(bad_json, 400)["message"]
    plain = api.request("POST", path, data=b"presence", headers={"Content-Type": "text/plain"})
    assert_error_shape(plain, 415)
    assert redisdb.dbsize() == 0


def test_oversized_body_is_413(api: ServerApiClient, redisdb: redis.Redis) -> None:
    """A body over VORA_SERVER_API_MAX_BODY_BYTES is refused with 413 before it is read."""
    huge = {"events": [{"identity": IDENTITY, **RINGING}] * 60_000}
    response = api.request("POST", "/events/batch", json=huge)
    assert "larger than" in assert_error_shape(response, 413)["message"]
    assert redisdb.dbsize() == 0


def test_retry_with_the_same_idempotency_key_delivers_once(
    api: ServerApiClient,
    server: RunningServer,
    redisdb: redis.Redis,
    setup_token: Callable[..., str],
    connect: Callable[..., Client],
) -> None:
    """A retried publish (same key, same event) answers the first result and the socket sees the event once."""
    client = connect(server, setup_token(server))
    event = {**RINGING, "idempotencyKey": "pbx-1"}
    first = api.publish(IDENTITY, event).json()
    # The same event with its keys in another order is the same event.
    retried = api.publish(
        IDENTITY, {"idempotencyKey": "pbx-1", "data": {"from": "+34602128708", "callId": "c-1"}, "type": "callRinging"}
    )
    assert retried.status_code == 200, retried.text
    assert retried.json() == {**first, "duplicate": True}
    marker = api.publish(IDENTITY, {"type": "presence", "data": {"status": "busy"}}).json()
    assert [client.next()["eventId"], client.next()["eventId"]] == [first["eventId"], marker["eventId"]]
    assert stream_length(redisdb) == 2


def test_same_key_for_another_event_is_409(api: ServerApiClient, redisdb: redis.Redis) -> None:
    """Reusing an idempotency key for a different event within the window is a 409 and writes nothing new."""
    assert api.publish(IDENTITY, {**RINGING, "idempotencyKey": "pbx-2"}).status_code == 200
    other = api.publish(IDENTITY, {"type": "callEnded", "data": {"callId": "c-1"}, "idempotencyKey": "pbx-2"})
    assert "already published a different event" in assert_error_shape(other, 409)["message"]
    assert stream_length(redisdb) == 1


def test_idempotency_keys_are_per_identity(api: ServerApiClient, redisdb: redis.Redis) -> None:
    """The same key on two identities publishes to both."""
    event = {**RINGING, "idempotencyKey": "pbx-3"}
    assert api.publish(IDENTITY, event).json()["duplicate"] is False
    assert api.publish("602128708", event).json()["duplicate"] is False
    assert stream_length(redisdb, IDENTITY) == stream_length(redisdb, "602128708") == 1


def test_batch_refuses_only_its_bad_items(api: ServerApiClient, redisdb: redis.Redis) -> None:
    """Each bad item is refused alone with its index and reason; the good ones are published in order."""
    items: list[Any] = [
        {"identity": IDENTITY, **RINGING},
        {"identity": IDENTITY, "type": "callRinging", "data": {}},
        {"identity": "602128708", "type": "presence", "data": {"status": "away"}},
        {"identity": "bad identity", "type": "presence", "data": {"status": "away"}},
        {"identity": IDENTITY, "type": "nope", "data": {}},
        {"identity": IDENTITY, "type": "presence", "data": {"status": "busy"}, "idempotencyKey": "k-1"},
        {"identity": IDENTITY, "type": "presence", "data": {"status": "busy"}, "idempotencyKey": "k-1"},
        {"identity": IDENTITY, "type": "presence", "data": {"status": "away"}, "idempotencyKey": "k-1"},
        {"type": "presence", "data": {"status": "away"}},
        {"identity": IDENTITY, "type": "callEnded", "data": {"callId": "c-\ud83d"}},
    ]
    response = api.batch(items)
    assert response.status_code == 200, response.text
    body = response.json()
    results = body["results"]
    assert [r["index"] for r in results] == list(range(len(items)))
    assert [r["status"] for r in results] == [
        "published",
        "refused",
        "published",
        "refused",
        "refused",
        "published",
        "duplicate",
        "refused",
        "refused",
        "refused",
    ]
    assert (body["published"], body["duplicates"], body["refused"]) == (3, 1, 6)
    assert "callId" in results[1]["error"]["message"]
    assert results[1]["error"]["status"] == "400"
    assert "identity" in results[3]["error"]["message"]
    assert "nope" in results[4]["error"]["message"]
    assert results[6]["eventId"] == results[5]["eventId"]
    assert results[7]["error"]["status"] == "409"
    assert "identity" in results[8]["error"]["message"]
    assert results[9]["error"]["status"] == "400"
    assert "callEnded data is invalid at callId: a string holds a lone UTF-16" in results[9]["error"]["message"]
    assert [r["sequenceNumber"] for r in results if r["status"] == "published"] == [1, 1, 2]
    assert stream_length(redisdb, IDENTITY) == 2
    assert stream_length(redisdb, "602128708") == 1


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"events": []}, "events"),
        ({"events": [{"identity": IDENTITY, **RINGING}] * 101}, "more than the 100"),
        ({"events": [{"identity": IDENTITY, **RINGING}] * 1001}, "events"),
        ({"events": [{"identity": IDENTITY, **RINGING}, 7]}, "events.1"),
        ({"events": {"identity": IDENTITY}}, "events"),
        ({"events": [], "more": True}, "Additional properties"),
    ],
)
def test_malformed_batch_is_400_and_writes_nothing(
    api: ServerApiClient, redisdb: redis.Redis, body: dict[str, Any], message: str
) -> None:
    """An empty or oversized batch, or one that is not a list of objects, is refused whole."""
    error = assert_error_shape(api.request("POST", "/events/batch", json=body), 400)
    assert message in error["message"], error["message"]
    assert redisdb.dbsize() == 0


def test_batch_recovers_when_redis_forgot_its_scripts(api: ServerApiClient, redisdb: redis.Redis) -> None:
    """After SCRIPT FLUSH (a restarted Redis) a batch still publishes every item exactly once."""
    assert api.batch([{"identity": IDENTITY, **RINGING}]).json()["published"] == 1
    redisdb.script_flush()
    body = api.batch([{"identity": IDENTITY, **RINGING}, {"identity": IDENTITY, **RINGING, "idempotencyKey": "s"}])
    assert body.json()["published"] == 2, body.text
    assert stream_length(redisdb) == 3


def test_unknown_path_and_method_keep_the_error_shape(api: ServerApiClient) -> None:
    """An unknown path is a 404 and an undeclared method a 405, in the error shape."""
    assert_error_shape(api.request("GET", "/nothing/here"), 404)
    response = api.request("PUT", f"/identities/{IDENTITY}/events", json={})
    assert_error_shape(response, 405)
    assert "POST" in response.headers["Allow"]


def test_publish_needs_a_body(server: RunningServer, redisdb: redis.Redis) -> None:
    """A publish without a body is a 400."""
    response = requests.post(
        f"{server.server_api_url}/identities/{IDENTITY}/events",
        headers={
            "Authorization": ServerApiClient(server).session.headers["Authorization"],
            "Content-Type": "application/json",
        },
        timeout=5,
    )
    assert_error_shape(response, 400)


def test_incoming_call_over_http_queues_one_push_job(api: ServerApiClient, redisdb: redis.Redis) -> None:
    """An inbound callRinging published over HTTP queues the push wake-up job, once even when retried."""
    ringing = {"type": "callRinging", "data": {"callId": "c-9", "direction": "inbound"}, "idempotencyKey": "ring-9"}
    assert api.publish(IDENTITY, ringing).json()["duplicate"] is False
    assert api.publish(IDENTITY, ringing).json()["duplicate"] is True
    assert api.batch([{"identity": IDENTITY, **ringing}]).json()["duplicates"] == 1
    assert redisdb.xlen(keys.PUSH_JOBS) == 1
    outbound = {"identity": IDENTITY, "type": "callRinging", "data": {"callId": "c-10", "direction": "outbound"}}
    assert api.batch([outbound]).json()["published"] == 1
    assert redisdb.xlen(keys.PUSH_JOBS) == 1


def test_publish_unconfirmed_by_replicas_is_503_and_a_keyed_retry_is_safe(
    api_env: dict[str, str], tmp_path: Path, redisdb: redis.Redis
) -> None:
    """With a replica asked for and none there, a publish is stored but answered 503; its keyed retry is a duplicate."""
    env = {**api_env, "VORA_PUBLISH_MIN_REPLICAS": "1", "VORA_PUBLISH_REPLICA_TIMEOUT": "50"}
    with running_server(env, tmp_path) as waiting:
        api = ServerApiClient(waiting)
        event = {**RINGING, "idempotencyKey": "wait-1"}
        refused = assert_error_shape(api.publish(IDENTITY, event), 503)
        assert "0 of the 1 replicas" in refused["message"]
        retried = api.publish(IDENTITY, event)
        assert retried.status_code == 200, retried.text
        assert retried.json()["duplicate"] is True
        batch = api.batch([{"identity": IDENTITY, "type": "presence", "data": {"status": "busy"}}]).json()
        assert batch["results"][0]["error"]["status"] == "503"
        assert stream_length(redisdb) == 2


def test_batch_items_are_checked_in_the_words_of_a_single_publish(api: ServerApiClient, redisdb: redis.Redis) -> None:
    """A batch item's bad timestamp or type is refused as a single publish of it would be; the good items publish."""
    bad = [{"identity": IDENTITY, **RINGING, "timestamp": t} for t in BAD_TIMESTAMPS]
    bad.append({"identity": IDENTITY, "type": "callExploded", "data": {"callId": "c"}})
    good = {"identity": IDENTITY, **RINGING, "timestamp": "2026-12-02T10:00:00.000Z"}
    response = api.batch([*bad, good])
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["status"] for r in results] == ["refused"] * len(bad) + ["published"]
    for item, result in zip(bad, results, strict=False):
        alone = assert_error_shape(api.publish(IDENTITY, {k: v for k, v in item.items() if k != "identity"}), 400)
        assert result["error"]["message"] == alone["message"]
    assert stream_length(redisdb, IDENTITY) == 1
