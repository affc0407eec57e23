"""Tests of the SDK's reconnect rules: what each close means and how long each wait is."""

from __future__ import annotations

import random

import pytest
from vora_client import Next, ReconnectPolicy, event_position
from vora_client.reconnect import after_close, after_termination


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("logout", Next.STOP),
        ("revoked", Next.STOP),
        ("maintenance", Next.RESUME),
        ("replaced", Next.SET_UP_AGAIN),
        ("tokenExpired", Next.SET_UP_AGAIN),
        ("disconnected", Next.SET_UP_AGAIN),
    ],
)
def test_each_channel_terminated_reason_has_its_next_step(reason: str, expected: Next) -> None:
    """Logout and revoked stop, maintenance resumes, replaced, tokenExpired and disconnected set up again."""
    assert after_termination(reason) is expected


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (1000, Next.SET_UP_AGAIN),
        (4401, Next.SET_UP_AGAIN),
        (1001, Next.RESUME),
        (1006, Next.RESUME),
        (4008, Next.RESUME),
    ],
)
def test_an_unexplained_close_resumes_unless_it_ends_the_session(code: int, expected: Next) -> None:
    """1000 and 4401 without channelTerminated end the session; every other code resumes."""
    assert after_close(code) is expected


def test_first_waits_are_drawn_over_the_window_of_the_close_code() -> None:
    """With no window announced, a crowd drop (1006, 1001, 1011) spreads over 20 s, a client's own over 1 s."""
    policy = ReconnectPolicy(rng=random.Random(7))
    crowd = [policy.first_wait(code) for code in (1006, 1001, 1011) for _ in range(300)]
    alone = [policy.first_wait(code) for code in (1008, 4008) for _ in range(300)]
    assert 0 <= min(crowd) < 1
    assert 19 < max(crowd) <= 20
    assert min(alone) >= 0
    assert max(alone) <= 1


def test_a_crowd_drop_waits_within_the_window_the_server_announced() -> None:
    """With reconnectWindowSeconds announced, a crowd drop spreads over it instead of 20 s; a client's own drop not."""
    policy = ReconnectPolicy(rng=random.Random(7))
    crowd = [policy.first_wait(code, 2.0) for code in (1006, 1001, 1011, None) for _ in range(300)]
    alone = [policy.first_wait(code, 5.0) for code in (1008, 4008) for _ in range(300)]
    assert 0 <= min(crowd) < 0.2
    assert 1.8 < max(crowd) <= 2
    assert max(alone) <= 1


def test_a_session_that_ended_is_set_up_again_within_a_second() -> None:
    """After 1000 or 4401 (replaced and the like close with 1000) the wait is uniform(0, 1), not a crowd's."""
    policy = ReconnectPolicy(rng=random.Random(5))
    waits = [policy.first_wait(code, window) for code in (1000, 4401) for window in (None, 8.0) for _ in range(200)]
    assert max(waits) <= 1
    assert policy.stable_after == 20


def test_refused_waits_add_retry_after_to_a_capped_doubling_window() -> None:
    """After refusal n the wait is Retry-After plus uniform(0, min(30, 2**n)); never sooner than Retry-After."""
    policy = ReconnectPolicy(rng=random.Random(3))
    waits = [policy.refused_wait(attempt, 5.0) for attempt in (1, 2, 3, 10) for _ in range(200)]
    assert min(waits) >= 5.0
    assert max(policy.refused_wait(1, None) for _ in range(200)) <= 2
    assert max(policy.refused_wait(10, None) for _ in range(500)) <= 30


def test_event_ids_compare_as_numbers_part_by_part() -> None:
    """9-1 comes before 10-0, which a string comparison gets wrong."""
    assert event_position("9-1") < event_position("10-0")
    assert event_position("10-2") > event_position("10-1")
