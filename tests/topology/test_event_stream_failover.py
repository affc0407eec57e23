"""Event streams through a buffering nginx, an instance SIGKILLed under them: each resumes on the survivor, whole."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import requests

from testbed.redis_procs import RedisServer
from testbed.vora_server import running_server
from tests.harness.nginx import Nginx
from tests.harness.tokens import TokenFactory
from tests.harness.topology import EnvFactory
from tests.harness.ws_client import make_publisher, open_event_stream
from vora.store.client import connect
from vora.store.directory import Directory

pytestmark = [pytest.mark.slow, pytest.mark.topology, pytest.mark.ws]

STREAMS = 40


def identity_of(n: int) -> str:
    """Return stream n's identity (one user and identity per stream)."""
    return f"91030{n:04d}"


def test_streams_resume_on_the_survivor_with_nothing_lost_or_repeated(
    nginx_binary: str, make_env: EnvFactory, make_token: TokenFactory, tmp_path: Path
) -> None:
    """40 streams through nginx (which buffers by default: X-Accel-Buffering turns it off); one instance is killed."""
    with contextlib.ExitStack() as stack:
        redis_server = stack.enter_context(RedisServer())
        servers = []
        for n in range(2):
            metrics_dir = tmp_path / f"metrics-{n}"  # a killed instance cannot clean up after itself
            metrics_dir.mkdir()
            env = {**make_env(redis_server.url), "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
            servers.append(stack.enter_context(running_server(env, tmp_path)))
        proxy = stack.enter_context(Nginx([s.port for s in servers], binary=nginx_binary))
        client = stack.enter_context(contextlib.closing(connect(redis_server.url, timeout=2.0)))
        publisher = make_publisher(client)
        base = f"{proxy.url}/vora"
        tokens = []
        for n in range(STREAMS):
            Directory(client).add(f"user-{n}", [identity_of(n)])
            answer = requests.post(
                f"{base}/identity/setup",
                json={"connectionType": "ServerSentEvents", "identity": identity_of(n)},
                headers={"Authorization": f"Bearer {make_token(f'user-{n}')}"},
                timeout=10,
            )
            assert answer.status_code == 200, answer.text
            tokens.append(answer.json()["webSocketToken"])
        streams = [open_event_stream(base, token) for token in tokens]
        try:
            first = [publisher.publish(identity_of(n), "callRinging", {"callId": f"a-{n}"}) for n in range(STREAMS)]
            assert [s.next()["eventId"] for s in streams] == [p.event_id for p in first]

            victim = servers[1]
            victim.process.kill()
            missed = [publisher.publish(identity_of(n), "callRinging", {"callId": f"b-{n}"}) for n in range(STREAMS)]
            reconnected = 0
            for n in range(STREAMS):
                event = streams[n].next_or_end(timeout=20)
                if event is None:
                    # Its instance died: reconnect as EventSource does, to the same URL with Last-Event-ID.
                    last = streams[n].last_event_id
                    streams[n].close()
                    streams[n] = open_event_stream(base, tokens[n], header_last_event_id=last)
                    reconnected += 1
                    event = streams[n].next()
                assert event["eventId"] == missed[n].event_id, n
            assert 0 < reconnected < STREAMS
            later = [publisher.publish(identity_of(n), "callRinging", {"callId": f"c-{n}"}) for n in range(STREAMS)]
            assert [s.next()["eventId"] for s in streams] == [p.event_id for p in later]
        finally:
            for stream in streams:
                stream.close()
