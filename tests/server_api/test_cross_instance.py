"""Tests that the server API reaches sockets held by another instance sharing the same Redis."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis

from testbed.vora_server import RunningServer, running_server
from tests.harness.server_api import IDENTITY, ServerApiClient
from tests.harness.ws_client import EventClient

pytestmark = [pytest.mark.slow, pytest.mark.server_api, pytest.mark.ws]


def test_event_published_on_a_reaches_a_socket_on_b(
    server: RunningServer,
    api_env: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
    redisdb: redis.Redis,
    setup_token: Callable[..., str],
    connect_either: Callable[..., EventClient],
) -> None:
    """A socket on instance B receives what the server API of instance A published, then B's socket is ended from A."""
    with running_server(api_env, tmp_path_factory.mktemp("instance-b")) as instance_b:
        client = connect_either(instance_b, setup_token(instance_b))
        api = ServerApiClient(server)
        published = api.publish(IDENTITY, {"type": "callRinging", "data": {"callId": "cross"}}).json()
        event = client.next()
        assert event["eventId"] == published["eventId"]
        assert event["data"] == {"callId": "cross"}
        batch = api.batch([{"identity": IDENTITY, "type": "callEnded", "data": {"callId": "cross"}}]).json()
        assert client.next()["eventId"] == batch["results"][0]["eventId"]
        online = api.request("GET", f"/identities/{IDENTITY}/online").json()
        assert online["online"] is True
        assert api.request("DELETE", f"/identities/{IDENTITY}/sessions").json()["ended"]
        assert client.next()["data"] == {"reason": "disconnected"}
        assert client.close_status() == 1000
