"""A push gateway that does not answer stalls no socket, no request, and loses no event."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from testbed.webhooks import HANG, WebhookReceiver
from tests.harness import wait_for
from tests.harness.push import WAIT, Connect, OpenSession, for_identity, ring
from vora.events.publisher import EventPublisher

# Its own module: no other push server may consume the shared queue while this one's consumer is stuck.
pytestmark = [pytest.mark.slow, pytest.mark.ws, pytest.mark.push]


def test_stuck_gateway_stalls_no_socket_and_loses_no_event(
    make_push_server: Callable[..., Any],
    gateway: WebhookReceiver,
    callback: WebhookReceiver,
    open_session: OpenSession,
    connect: Connect,
    publisher: EventPublisher,
) -> None:
    """While the only push consumer waits on a gateway that does not answer, sockets and the API keep working.

    When the gateway then fails for good the call is signalled notReady (pushFailed), and the
    sleeping device still finds the ringing call in its stream when it connects.
    """
    with make_push_server(
        push_concurrency="1", push_timeout="30", push_max_attempts="2", holdup_timeout="60"
    ) as server:
        sleeper = open_session(server, "700000009")
        listener = open_session(server, "700000010", hold_up=False, device=None)
        client = connect(server, listener.token)
        gateway.plan(HANG, 503)
        published = ring(publisher, sleeper.identity)
        wait_for(lambda: gateway.hanging == 1, WAIT, what="the push to hang at the gateway")

        sent = [publisher.publish(listener.identity, "callEnded", {"callId": f"other-{n}"}) for n in range(20)]
        assert [e["eventId"] for e in client.events(20)] == [e.event_id for e in sent]
        assert open_session(server, "700000011", hold_up=False, device=None).token
        assert gateway.hanging == 1  # all of that happened with the push still stuck

        gateway.release_hanging()
        failed = callback.next_accepted(for_identity(sleeper.identity), timeout=WAIT)
        assert (failed.event, failed.body["reason"]) == ("holdUpNotReady", "pushFailed")
        late = connect(server, sleeper.token)
        assert late.next()["eventId"] == published.event_id
