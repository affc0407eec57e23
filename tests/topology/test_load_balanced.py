"""Three VORA instances on one Redis behind nginx (round robin, no stickiness): the journey goes through nginx."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import Any

import psutil
import pytest

from testbed.vora_server import RunningServer, running_server
from tests.harness import Nginx, RedisServer, wait_for
from tests.harness.journey import Api, Entry, assert_delivered, assert_no_server_errors, readiness
from tests.harness.tokens import TokenFactory
from tests.harness.topology import EnvFactory, Sockets
from tests.harness.ws_client import make_publisher
from vora.store.client import connect
from vora.store.directory import Directory

pytestmark = [pytest.mark.topology, pytest.mark.slow]

USER = "frank"
IDENTITY = "910444000"
INSTANCES = 3


def established_on(server: RunningServer) -> list[Any]:
    """List the established TCP connections the server's processes hold on its port."""
    connections = []
    for pid in [server.process.pid, *server.worker_pids()]:
        with contextlib.suppress(psutil.NoSuchProcess):
            connections += [
                c
                for c in psutil.Process(pid).net_connections(kind="tcp")
                if c.status == psutil.CONN_ESTABLISHED and c.laddr.port == server.port
            ]
    return connections


def holder_of_the_only_socket(servers: list[RunningServer]) -> RunningServer | None:
    """Return the one instance with a connection from nginx once that is the socket alone (REST ones close)."""
    held = [(server, established_on(server)) for server in servers]
    if sum(len(connections) for _, connections in held) != 1:
        return None
    return next(server for server, connections in held if connections)


def test_journey_through_nginx_survives_losing_the_instance_that_holds_the_socket(
    make_env: EnvFactory,
    make_token: TokenFactory,
    sockets: Sockets,
    nginx_binary: str,
    tmp_path: Path,
) -> None:
    """Setup, socket, events and logout all go through nginx; killing the socket's instance loses no event."""
    with contextlib.ExitStack() as stack:
        redis_server = stack.enter_context(RedisServer())
        servers = []
        for n in range(INSTANCES):
            metrics_dir = tmp_path / f"metrics-{n}"  # a killed instance cannot clean up after itself
            metrics_dir.mkdir()
            env = {**make_env(redis_server.url), "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
            servers.append(stack.enter_context(running_server(env, tmp_path)))
        nginx = stack.enter_context(Nginx([s.port for s in servers], binary=nginx_binary))
        client = stack.enter_context(contextlib.closing(connect(redis_server.url, timeout=2.0)))
        publisher = make_publisher(client)
        Directory(client).add(USER, [IDENTITY])

        entry = Entry.at_port(nginx.listen_port)
        api = Api(entry, make_token(USER))
        assert readiness(entry) == 204
        assert api.identities().json() == {"identities": [IDENTITY]}
        token = api.setup(IDENTITY)
        api.subscribe(IDENTITY, ["callRinging", "callHeld", "callEnded"])
        listener = sockets(entry, token)
        first = [publisher.publish(IDENTITY, "callRinging", {"callId": f"first-{n}"}) for n in range(3)]
        assert_delivered(listener, first)

        holder = wait_for(lambda: holder_of_the_only_socket(servers), 10.0, what="the socket's instance to be found")
        survivors = [s for s in servers if s is not holder]
        holder.process.kill()
        assert listener.dropped() is None  # cut without a close frame: the instance is gone

        missed = []
        for n in range(3):
            publisher.publish(IDENTITY, "presence", {"status": "busy"})  # filtered out by the subscription
            missed.append(publisher.publish(IDENTITY, "callHeld", {"callId": f"missed-{n}"}))
        resumed = sockets(entry, token, last_event_id=first[-1].event_id)
        assert_delivered(resumed, missed)
        live = publisher.publish(IDENTITY, "callEnded", {"callId": "live"})
        assert_delivered(resumed, [live])
        received = [e["eventId"] for e in listener.received + resumed.received if e["eventId"]]
        assert received == [p.event_id for p in [*first, *missed, live]]

        new_holder = wait_for(lambda: holder_of_the_only_socket(survivors), 10.0, what="the new socket's instance")
        api.logout(IDENTITY)
        terminated = resumed.next()
        assert (terminated["type"], terminated["data"]) == ("channelTerminated", {"reason": "logout"})
        assert resumed.close_status() == 1000

        # Nothing was sticky: nginx spread the requests over every instance it had.
        upstreams = {m.group(1) for line in nginx.access_log_lines() if (m := re.search(r"upstream=(\S+)", line))}
        assert {f"127.0.0.1:{s.port}" for s in servers} <= {u for a in upstreams for u in a.split(", ")}
        assert new_holder in survivors
        for server in survivors:
            assert readiness(Entry.of(server)) == 204
            assert_no_server_errors(server)
