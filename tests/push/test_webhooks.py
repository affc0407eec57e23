"""Tests of the signed webhook sender against a real HTTP receiver on loopback."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from testbed.webhooks import HANG, MALFORMED, TRICKLE, WebhookReceiver
from tests.harness import free_port
from vora.push.webhooks import Delivery, WebhookSender, sign, verify

SECRET = "s" * 32


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    """Run a webhook receiver that checks VORA's signature."""
    with WebhookReceiver(SECRET) as running:
        yield running


def sender(max_attempts: int = 3, timeout: float = 1.0) -> WebhookSender:
    """Build a sender with short backoff so failing attempts follow each other quickly."""
    return WebhookSender(timeout=timeout, max_attempts=max_attempts, backoff=0.01)


def deliver(target: WebhookSender, url: str) -> Delivery:
    """Post one small body."""
    return target.deliver(url, SECRET, "pushNotification", "d" * 32, {"hello": "world"})


class TestSignature:
    """The X-Vora-Signature scheme."""

    def test_a_signature_verifies_with_its_secret_and_body(self) -> None:
        """A fresh signature verifies with the same secret and body."""
        now = int(time.time())
        assert verify(SECRET, sign(SECRET, now, b"{}"), b"{}", now)

    @pytest.mark.parametrize(
        ("secret", "body", "age"),
        [("t" * 32, b"{}", 0), (SECRET, b'{"x":1}', 0), (SECRET, b"{}", 301)],
    )
    def test_wrong_secret_changed_body_or_old_signature_fails(self, secret: str, body: bytes, age: int) -> None:
        """Another secret, a tampered body or a replay older than the tolerance is refused."""
        now = int(time.time())
        assert not verify(secret, sign(SECRET, now - age, b"{}"), body, now)

    @pytest.mark.parametrize("header", ["", "t=x,v1=00", "v1=00", "t=1"])
    def test_malformed_headers_fail(self, header: str) -> None:
        """A header that is not t=...,v1=... never verifies."""
        assert not verify(SECRET, header, b"{}", time.time())


class TestDelivery:
    """Retries, timeouts and refusals."""

    def test_delivered_signed_at_the_first_attempt(self, receiver: WebhookReceiver) -> None:
        """A 200 ends the delivery after one signed request carrying the event and delivery headers."""
        assert deliver(sender(), receiver.url) == Delivery(True, 1)
        received = receiver.next_accepted()
        assert received.signed
        assert (received.event, received.delivery, received.body) == ("pushNotification", "d" * 32, {"hello": "world"})

    def test_5xx_then_200_is_retried_once_and_delivered(self, receiver: WebhookReceiver) -> None:
        """A 500 is retried; the following 200 delivers it, so the receiver accepts it exactly once."""
        receiver.plan(500)
        retries: list[int] = []
        target = WebhookSender(timeout=1.0, max_attempts=3, backoff=0.01, on_retry=lambda: retries.append(1))
        assert deliver(target, receiver.url) == Delivery(True, 2)
        assert [a.answer for a in receiver.attempts] == [500, 200]
        assert len(retries) == 1

    def test_a_timeout_is_retried(self, receiver: WebhookReceiver) -> None:
        """A receiver that holds the request past the timeout gets a second attempt."""
        receiver.plan(HANG)
        assert deliver(sender(timeout=0.5), receiver.url) == Delivery(True, 2)

    def test_a_malformed_answer_is_retried(self, receiver: WebhookReceiver) -> None:
        """An answer that is not HTTP fails that attempt, which is retried, instead of raising out of the delivery."""
        receiver.plan(MALFORMED)
        assert deliver(sender(), receiver.url) == Delivery(True, 2)
        assert [a.answer for a in receiver.attempts] == [MALFORMED, 200]

    def test_every_answer_malformed_gives_up_naming_it(self, receiver: WebhookReceiver) -> None:
        """Malformed answers at every attempt end the delivery undelivered, with the parser's complaint as problem."""
        receiver.plan(MALFORMED, MALFORMED)
        assert deliver(sender(max_attempts=2), receiver.url) == Delivery(False, 2, "BadStatusLine")

    def test_an_answer_trickled_past_the_timeout_is_cut_and_retried(self, receiver: WebhookReceiver) -> None:
        """An answer trickled a byte at a time, each within the socket timeout, ends its attempt at the timeout."""
        receiver.plan(TRICKLE, TRICKLE)
        started = time.monotonic()
        delivery = deliver(sender(max_attempts=2, timeout=0.5), receiver.url)
        assert delivery == Delivery(False, 2, "TimeoutError")
        assert time.monotonic() - started < 2.5  # two attempts of 0.5 s and a short backoff
        assert [a.answer for a in receiver.attempts] == [TRICKLE, TRICKLE]

    def test_4xx_is_final(self, receiver: WebhookReceiver) -> None:
        """A 400 is not retried."""
        receiver.plan(400)
        assert deliver(sender(), receiver.url) == Delivery(False, 1, "HTTP 400")
        assert len(receiver.attempts) == 1

    def test_every_attempt_failing_gives_up_after_the_last(self, receiver: WebhookReceiver) -> None:
        """Three 503s with three attempts end undelivered after three requests."""
        receiver.plan(503, 503, 503)
        assert deliver(sender(), receiver.url) == Delivery(False, 3, "HTTP 503")
        assert len(receiver.attempts) == 3

    def test_a_refused_connection_is_retried_then_given_up(self) -> None:
        """Nothing listening: every attempt fails fast and the delivery is given up."""
        delivery = deliver(sender(max_attempts=2), f"http://127.0.0.1:{free_port()}/hook")
        assert (delivery.delivered, delivery.attempts) == (False, 2)
        assert delivery.problem == "ConnectionRefusedError"

    def test_abandoning_stops_before_the_next_attempt(self, receiver: WebhookReceiver) -> None:
        """When before_attempt says no after a failure, nothing more is sent."""
        receiver.plan(500)
        calls: list[int] = []

        def once() -> bool:
            calls.append(1)
            return len(calls) == 1

        delivery = sender().deliver(receiver.url, SECRET, "holdUpReady", "d" * 32, {}, before_attempt=once)
        assert delivery == Delivery(False, 1, "abandoned")
        assert len(receiver.attempts) == 1

    def test_backoff_grows_and_stays_bounded(self) -> None:
        """Each wait lies between half and all of base * 2^(n-1), capped at 30 s."""
        target = WebhookSender(timeout=1.0, max_attempts=10, backoff=1.0)
        for attempt, ceiling in [(1, 1.0), (3, 4.0), (8, 30.0)]:
            assert ceiling / 2 <= target.backoff_delay(attempt) <= ceiling
