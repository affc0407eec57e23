"""Poll a condition until it holds or a deadline passes: the only way the harness waits."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import TypeVar

import redis

T = TypeVar("T")

DEFAULT_INTERVAL = 0.05
_TRANSIENT: tuple[type[BaseException], ...] = (OSError, redis.RedisError)


class WaitTimeout(TimeoutError):
    """A condition did not hold before its deadline."""


def wait_for(
    condition: Callable[[], T | None],
    timeout: float,
    *,
    what: str = "condition",
    interval: float = DEFAULT_INTERVAL,
    ignore: tuple[type[BaseException], ...] = _TRANSIENT,
    abort: Callable[[], str | None] | None = None,
) -> T:
    """Call condition until it returns a truthy value and return that, raising WaitTimeout at the deadline.

    Exceptions of the types in ignore count as "not yet"; abort, when given, is checked on every round
    and ends the wait at once with RuntimeError if it returns a message (e.g. the process died).
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        if abort is not None:
            reason = abort()
            if reason:
                raise RuntimeError(f"gave up waiting for {what}: {reason}")
        try:
            value = condition()
        except ignore as exc:
            last_error = exc
        else:
            if value:
                return value
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            detail = f" (last error: {last_error!r})" if last_error is not None else ""
            raise WaitTimeout(f"{what} did not happen within {timeout:.1f}s{detail}")
        time.sleep(min(interval, remaining))


def port_accepts(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    """Tell whether a TCP connection to host:port succeeds now."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
