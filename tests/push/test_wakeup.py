"""Journeys of a sleeping mobile softphone: pushed once for an incoming call, then ready or not ready in time."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
import redis
import requests

from testbed.vora_server import RunningServer
from testbed.webhooks import HANG, WebhookReceiver
from tests.harness import wait_for
from tests.harness.metrics import sample
from tests.harness.push import (
    HOLDUP_TIMEOUT,
    WAIT,
    Connect,
    OpenSession,
    for_identity,
    ring,
    webhook_schema,
)
from vora.events.publisher import EventPublisher, fingerprint
from vora.store import keys
from vora.store.streams import StreamStore

pytestmark = [pytest.mark.slow, pytest.mark.ws, pytest.mark.push]


def queue_drained(redisdb: redis.Redis) -> None:
    """Wait until every push job queued so far has been processed and acknowledged."""
    wait_for(lambda: redisdb.xlen(keys.PUSH_JOBS) == 0, WAIT, what="the push queue to drain")


def scrape(server: RunningServer) -> str:
    """Read the server's Prometheus metrics."""
    return requests.get(server.metrics_url, timeout=5).text


def test_sleeping_device_is_pushed_once_then_signalled_ready(
    push_server: RunningServer,
    gateway: WebhookReceiver,
    callback: WebhookReceiver,
    open_session: OpenSession,
    connect: Connect,
    publisher: EventPublisher,
) -> None:
    """No socket and an inbound call: one signed push; the woken socket gets the call; ready says how long it took."""
    session = open_session(push_server, "700000001")
    before = scrape(push_server)
    published = ring(publisher, session.identity)

    pushed = gateway.next_accepted(for_identity(session.identity), timeout=WAIT)
    assert pushed.signed
    assert pushed.event == "pushNotification"
    webhook_schema("PushNotification").validate(pushed.body)
    assert {k: pushed.body[k] for k in ("sessionId", "callId", "caller", "eventId", "platform", "deviceToken")} == {
        "sessionId": session.session_id,
        "callId": "call-1",
        "caller": "+34602128708",
        "eventId": published.event_id,
        "platform": "apns",
        "deviceToken": "f" * 64,
    }

    client = connect(push_server, session.token)
    event = client.next()
    assert (event["type"], event["eventId"]) == ("callRinging", published.event_id)

    ready = callback.next_accepted(for_identity(session.identity), timeout=WAIT)
    assert ready.signed
    assert ready.event == "holdUpReady"
    webhook_schema("HoldUpReady").validate(ready.body)
    assert (ready.body["sessionId"], ready.body["callId"]) == (session.session_id, "call-1")
    assert isinstance(ready.body["wakeUpMs"], int)
    assert ready.body["sinceRingMs"] >= ready.body["wakeUpMs"] >= 0
    assert len(gateway.attempts_for(for_identity(session.identity))) == 1
    assert "f" * 64 not in push_server.log()  # the device token is credential-like: never logged

    def moved() -> bool:
        after = scrape(push_server)
        return (
            sample(after, "vora_push_sent_total") > sample(before, "vora_push_sent_total")
            and sample(after, "vora_push_wakeup_seconds_count") > sample(before, "vora_push_wakeup_seconds_count")
            and sample(after, "vora_holdup_signals_total", outcome="holdUpReady", reason="")
            > sample(before, "vora_holdup_signals_total", outcome="holdUpReady", reason="")
        )

    wait_for(moved, WAIT, what="the push metrics to move")


def test_device_that_never_connects_is_signalled_not_ready(
    push_server: RunningServer,
    gateway: WebhookReceiver,
    callback: WebhookReceiver,
    open_session: OpenSession,
    connect: Connect,
    publisher: EventPublisher,
    redisdb: redis.Redis,
) -> None:
    """Pushed but no socket within the hold-up timeout: notReady (timeout); a late socket still gets the call."""
    session = open_session(push_server, "700000002")
    published = ring(publisher, session.identity)
    gateway.next_accepted(for_identity(session.identity), timeout=WAIT)

    not_ready = callback.next_accepted(for_identity(session.identity), timeout=HOLDUP_TIMEOUT + WAIT)
    assert not_ready.signed
    assert not_ready.event == "holdUpNotReady"
    webhook_schema("HoldUpNotReady").validate(not_ready.body)
    assert (not_ready.body["reason"], not_ready.body["callId"]) == ("timeout", "call-1")

    late = connect(push_server, session.token)
    assert late.next()["eventId"] == published.event_id
    queue_drained(redisdb)
    assert callback.accepted_now(for_identity(session.identity)) == []  # no ready after notReady


def test_awake_or_plain_sessions_are_never_pushed(
    push_server: RunningServer,
    gateway: WebhookReceiver,
    callback: WebhookReceiver,
    open_session: OpenSession,
    connect: Connect,
    publisher: EventPublisher,
    redisdb: redis.Redis,
) -> None:
    """A holdUpMode session with a socket open, or a session without holdUpMode, gets its call and no push."""
    awake = open_session(push_server, "700000003")
    client = connect(push_server, awake.token)
    wait_for(lambda: redisdb.zcard(keys.socket_presence(awake.identity)) == 1, WAIT, what="the socket's presence")
    plain = open_session(push_server, "700000004", hold_up=False, device=None)
    published = ring(publisher, awake.identity)
    ring(publisher, plain.identity)
    assert client.next()["eventId"] == published.event_id
    queue_drained(redisdb)
    for identity in (awake.identity, plain.identity):
        assert gateway.attempts_for(for_identity(identity)) == []
        assert callback.accepted_now(for_identity(identity)) == []


@pytest.mark.parametrize(
    ("failure", "identity"),
    [(500, "700000005"), (HANG, "700000006"), (503, "700000015"), (429, "700000016")],
    ids=["http-500", "timeout", "http-503", "http-429"],
)
def test_failed_attempt_is_retried_and_the_push_delivered_once(
    push_server: RunningServer,
    gateway: WebhookReceiver,
    open_session: OpenSession,
    publisher: EventPublisher,
    failure: int | str,
    identity: str,
) -> None:
    """A 5xx or 429, or a gateway holding the request past VORA's timeout, is retried; the push is accepted once."""
    session = open_session(push_server, identity)
    before = scrape(push_server)
    gateway.plan(failure)
    ring(publisher, session.identity)
    pushed = gateway.next_accepted(for_identity(identity), timeout=WAIT)
    attempts = gateway.attempts_for(for_identity(identity))
    assert [a.answer for a in attempts] == [failure, 200]
    assert {a.delivery for a in attempts} == {pushed.delivery}
    assert all(a.signed for a in attempts)
    wait_for(
        lambda: sample(scrape(push_server), "vora_push_retries_total") > sample(before, "vora_push_retries_total"),
        WAIT,
        what="the retry counter to move",
    )
    gateway.release_hanging()


@pytest.mark.parametrize(("refusal", "identity"), [(400, "700000012"), (404, "700000013"), (410, "700000014")])
def test_a_push_the_gateway_refuses_4xx_is_sent_once_counted_failed_and_signalled_push_failed(
    push_server: RunningServer,
    gateway: WebhookReceiver,
    callback: WebhookReceiver,
    open_session: OpenSession,
    publisher: EventPublisher,
    refusal: int,
    identity: str,
) -> None:
    """A gateway's 4xx is final: one attempt, counted in vora_push_failed_total, no retry, pushFailed signalled."""
    open_session(push_server, identity)
    before = scrape(push_server)
    gateway.plan(refusal)  # and 200 after it: a retry would be accepted
    ring(publisher, identity)

    not_ready = callback.next_accepted(for_identity(identity), timeout=WAIT)
    assert (not_ready.event, not_ready.body["reason"]) == ("holdUpNotReady", "pushFailed")
    after = scrape(push_server)
    assert [a.answer for a in gateway.attempts_for(for_identity(identity))] == [refusal]
    assert gateway.accepted_now(for_identity(identity)) == []
    assert sample(after, "vora_push_failed_total") == sample(before, "vora_push_failed_total") + 1
    assert sample(after, "vora_push_retries_total") == sample(before, "vora_push_retries_total")
    logged = [json.loads(line) for line in push_server.log().splitlines() if line.startswith("{")]
    session_id = not_ready.body["sessionId"]
    (given_up,) = [line for line in logged if line["msg"] == "push not delivered" and line["session"] == session_id]
    assert (given_up["attempts"], given_up["problem"]) == (1, f"HTTP {refusal}")


def test_rate_limit_caps_pushes_per_identity(
    push_server: RunningServer,
    gateway: WebhookReceiver,
    callback: WebhookReceiver,
    open_session: OpenSession,
    publisher: EventPublisher,
    redisdb: redis.Redis,
) -> None:
    """With a limit of 3 per window, a fourth incoming call is not pushed and is signalled notReady (rateLimited)."""
    session = open_session(push_server, "700000007")
    for index in range(4):
        ring(publisher, session.identity, f"call-{index}")
    limited = callback.next_accepted(for_identity(session.identity, "holdUpNotReady"), timeout=WAIT)
    assert limited.body["reason"] == "rateLimited"
    queue_drained(redisdb)
    pushed = gateway.accepted_now(for_identity(session.identity))
    assert len(pushed) == 3
    assert limited.body["callId"] not in {p.body["callId"] for p in pushed}


def test_two_instances_send_each_push_and_signal_once(
    push_server: RunningServer,
    make_push_server: Callable[..., Any],
    gateway: WebhookReceiver,
    callback: WebhookReceiver,
    open_session: OpenSession,
    publisher: EventPublisher,
    redisdb: redis.Redis,
) -> None:
    """Two servers on one Redis: each of three calls is pushed once and gets one notReady at its deadline."""
    with make_push_server():
        session = open_session(push_server, "700000008")
        calls = {f"call-{index}" for index in range(3)}
        for call_id in sorted(calls):
            ring(publisher, session.identity, call_id)
        signals = [callback.next_accepted(for_identity(session.identity), timeout=HOLDUP_TIMEOUT + WAIT) for _ in calls]
        wait_for(lambda: redisdb.zcard(keys.PUSH_DEADLINES) == 0, WAIT, what="every deadline to be taken")
        queue_drained(redisdb)
    assert sorted(s.body["callId"] for s in signals) == sorted(calls)
    assert {s.body["reason"] for s in signals} == {"timeout"}
    assert callback.accepted_now(for_identity(session.identity)) == []
    pushes = gateway.attempts_for(for_identity(session.identity))
    assert sorted(p.body["callId"] for p in pushes) == sorted(calls)


def test_keyed_retry_of_a_ring_whose_answer_was_lost_still_pushes_once(
    push_server: RunningServer,
    gateway: WebhookReceiver,
    open_session: OpenSession,
    publisher: EventPublisher,
    redisdb: redis.Redis,
) -> None:
    """A ring stored without its publisher hearing, then retried twice under its key, is pushed exactly once."""
    session = open_session(push_server, "700000009")
    data = {"callId": "call-lost", "direction": "inbound", "from": "+34602128708", "to": session.identity}
    checked = publisher.checked(session.identity, "callRinging", data)
    keyed = replace(checked, idempotency_key="ring-1", fingerprint=fingerprint("callRinging", data, None))
    # The script ran but its reply never reached the publisher: the store wrote it, nothing else happened.
    stored = StreamStore(redisdb, max_length=10_000, max_age_seconds=86_400).append_checked(keyed, 60_000)

    retried = publisher.publish_once(keyed, data, 60_000)
    assert (retried.duplicate, retried.event_id) == (True, stored.event_id)
    pushed = gateway.next_accepted(for_identity(session.identity), timeout=WAIT)
    assert (pushed.body["callId"], pushed.body["eventId"]) == ("call-lost", stored.event_id)

    assert publisher.publish_once(keyed, data, 60_000).duplicate
    queue_drained(redisdb)
    assert len(gateway.attempts_for(for_identity(session.identity))) == 1
