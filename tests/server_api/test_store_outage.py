"""Publishing while Redis hangs or is down: a 503 says whether the event was not published or may have been."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed.vora_server import RunningServer, running_server
from testbed.wait import wait_for
from tests.harness import RedisServer
from tests.harness.processes import frozen
from tests.harness.server_api import IDENTITY, ServerApiClient, assert_error_shape
from vora.store import keys

pytestmark = [pytest.mark.slow, pytest.mark.server_api]

PRESENCE = {"type": "presence", "data": {"status": "busy"}}
MAYBE = "may or may not have been published"


@pytest.fixture
def outage(api_env: dict[str, str], tmp_path: Path) -> Iterator[tuple[RedisServer, RunningServer, ServerApiClient]]:
    """Yield a Redis of this test's own, a server on it (1 s Redis timeout) and a server API client that used it."""
    with RedisServer() as redis_server:
        env = {**api_env, "VORA_REDIS_URL": redis_server.url, "VORA_REDIS_TIMEOUT": "1"}
        with running_server(env, tmp_path) as server:
            api = ServerApiClient(server)
            # The worker's connection is open and both publish scripts are loaded before Redis stops
            # answering, as in production (an EVALSHA of an unknown script would run nothing when Redis resumes).
            assert api.publish("602128708", PRESENCE).status_code == 200
            assert api.publish("602128708", {**PRESENCE, "idempotencyKey": "warm"}).status_code == 200
            yield redis_server, server, api
            api.session.close()


def _length(redis_server: RedisServer, identity: str = IDENTITY) -> int:
    return int(redis_server.execute("XLEN", keys.event_stream(identity)))


def test_hung_redis_publish_is_503_maybe_published_and_a_keyed_retry_stores_it_once(
    outage: tuple[RedisServer, RunningServer, ServerApiClient],
) -> None:
    """A keyed publish sent to a hung Redis is a 503 saying it may have been published; its retry is a duplicate."""
    redis_server, _, api = outage
    event = {**PRESENCE, "idempotencyKey": "hung-1"}
    with frozen(redis_server.pid):
        refused = assert_error_shape(api.publish(IDENTITY, event), 503)
    assert MAYBE in refused["message"], refused["message"]
    assert "same idempotencyKey" in refused["message"]
    wait_for(lambda: _length(redis_server) == 1, 10, what="the resumed Redis to run the publish it had received")
    retried = api.publish(IDENTITY, event)
    assert retried.status_code == 200, retried.text
    assert retried.json()["duplicate"] is True
    assert _length(redis_server) == 1


def test_hung_redis_unkeyed_publish_warns_that_a_retry_may_publish_twice(
    outage: tuple[RedisServer, RunningServer, ServerApiClient],
) -> None:
    """Without an idempotencyKey, the unknown outcome is a 503 that says a blind retry may publish the event twice."""
    redis_server, _, api = outage
    with frozen(redis_server.pid):
        refused = assert_error_shape(api.publish(IDENTITY, PRESENCE), 503)
    assert MAYBE in refused["message"]
    assert "twice" in refused["message"]
    assert "retry shortly" not in refused["message"]


def test_hung_redis_batch_is_503_maybe_published_and_a_keyed_retry_stores_each_once(
    outage: tuple[RedisServer, RunningServer, ServerApiClient],
) -> None:
    """A keyed batch sent to a hung Redis is a 503 saying any item may have been published; its retry adds none."""
    redis_server, _, api = outage
    items = [{"identity": IDENTITY, **PRESENCE, "idempotencyKey": f"hung-batch-{n}"} for n in range(3)]
    with frozen(redis_server.pid):
        refused = assert_error_shape(api.batch(items), 503)
    assert MAYBE in refused["message"]
    assert "same idempotencyKey" in refused["message"]
    wait_for(lambda: _length(redis_server) == 3, 10, what="the resumed Redis to run the batch it had received")
    retried = api.batch(items)
    assert retried.status_code == 200, retried.text
    assert retried.json()["duplicates"] == 3
    assert _length(redis_server) == 3


@pytest.mark.parametrize("batch", [False, True], ids=["publish", "batch"])
def test_unreachable_redis_publish_is_503_not_published(
    outage: tuple[RedisServer, RunningServer, ServerApiClient], batch: bool
) -> None:
    """With Redis down (connections refused), nothing can have been sent: the 503 says the event was not published."""
    redis_server, server, api = outage
    redis_server.stop()
    event = {**PRESENCE, "idempotencyKey": "down-1"}
    response = api.batch([{"identity": IDENTITY, **event}]) if batch else api.publish(IDENTITY, event)
    refused = assert_error_shape(response, 503)
    assert "not published" in refused["message"] or "no event of the batch was published" in refused["message"]
    assert MAYBE not in refused["message"]
    assert response.headers["Retry-After"] == "1"
    # The warning names the Redis error and says what it was: a refusal, not a pool timeout or a file limit.
    [logged] = [line for line in map(json.loads, server.log().splitlines()) if line["msg"] == "redis unavailable"]
    assert logged["error"] == "NotWritten"  # nothing reached Redis; the detail says why
    assert "Connection refused" in logged["detail"]
    assert "\n" not in logged["detail"]
