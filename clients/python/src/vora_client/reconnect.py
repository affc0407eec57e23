"""VORA's reconnect rules (README, "Reconnecting"): what a close means, and how long to wait, with full jitter."""

from __future__ import annotations

import enum
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

# channelTerminated reasons after which the session is over and setup must run again.
SET_UP_AGAIN = frozenset({"replaced", "tokenExpired", "disconnected"})
# Reasons after which the app's user (or operator) ended the session: reconnecting would be wrong.
STOP = frozenset({"logout", "revoked"})
# Reasons after which the same session resumes on another instance.
RESUME = frozenset({"maintenance"})

NORMAL_CLOSURE = 1000
GOING_AWAY = 1001
ABNORMAL_CLOSURE = 1006  # no close frame: the connection was cut
POLICY_VIOLATION = 1008  # no pong to the server's ping
INTERNAL_ERROR = 1011
SLOW_CONSUMER = 4008
SESSION_OVER = 4401


class Next(enum.Enum):
    """What a client does after its connection ends."""

    RESUME = "resume"  # reconnect with the same token and lastEventId
    SET_UP_AGAIN = "set up again"  # the session is over: a new setup, then resume
    STOP = "stop"  # the session was ended on purpose: close for good


def after_termination(reason: str) -> Next:
    """Say what follows a channelTerminated event with this reason (an unknown reason: set up again)."""
    if reason in STOP:
        return Next.STOP
    if reason in RESUME:
        return Next.RESUME
    return Next.SET_UP_AGAIN


def after_close(code: int | None) -> Next:
    """Say what follows a close that no channelTerminated explained."""
    if code in {NORMAL_CLOSURE, SESSION_OVER}:
        return Next.SET_UP_AGAIN
    return Next.RESUME


@dataclass
class ReconnectPolicy:
    """The README's waits: a first attempt spread over a window set by the close code, then capped backoff.

    Every wait is drawn uniformly from [0, bound] (full jitter) so that the clients of a dead instance
    do not come back in the same instant.
    """

    # After 1006, 1001, 1011 or maintenance, a drop that hit many clients at once, when the server announced no
    # reconnect window (an older server): the window it announces (reconnectWindowSeconds) bounds the wait instead.
    crowd_window: float = 20.0
    # After 1008 or 4008 (about this client alone), and before setting up again after 1000 or 4401 (the
    # session is over: after replaced, tokenExpired or disconnected the server closes with 1000).
    alone_window: float = 1.0
    backoff_cap: float = 30.0
    stable_after: float = 20.0  # a socket open this long starts the count of attempts again (docs/clients.md rule 8)
    rng: random.Random = field(default_factory=random.Random)
    # How often an open stream compares the wall clock with its last frame's time (docs/clients.md rule 6): a device
    # that suspended stopped the monotonic clock asyncio's timeouts run on, not the wall clock, so this notices a dead
    # link within this much awake time after a wake instead of the whole heartbeat deadline.
    wake_check: float = 5.0
    # The wall clock that check reads: a seam for the test that stands for a suspend (the clock jumps, the loop's
    # does not), as rng is for the draws; apps leave it alone.
    wall_clock: Callable[[], float] = time.time

    def first_wait(self, code: int | None, announced: float | None = None) -> float:
        """Return the wait before the first attempt after a socket closed with this code.

        announced is the reconnect window the server last announced to the stream (reconnectWindowSeconds), which
        bounds a crowd drop's wait; None when it announced none, and crowd_window bounds it.
        """
        if code in {POLICY_VIOLATION, SLOW_CONSUMER, NORMAL_CLOSURE, SESSION_OVER}:
            return self.rng.uniform(0, self.alone_window)
        return self.rng.uniform(0, self.crowd_window if announced is None else announced)

    def refused_wait(self, attempt: int, retry_after: float | None) -> float:
        """Return the wait after refused attempt number attempt (1, 2, ...): Retry-After plus jittered backoff."""
        bound = min(self.backoff_cap, 2.0**attempt)
        return (retry_after or 0.0) + self.rng.uniform(0, bound)
