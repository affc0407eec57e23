"""Keep a real redis-server busy with a script that loops, so that it answers BUSY, for as long as a block runs."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import redis

from testbed.redis_procs import RedisServer
from testbed.wait import wait_for

BUSY_AFTER_MS = 50  # busy-reply-threshold: how long a script runs before Redis answers BUSY to everyone else


@contextlib.contextmanager
def busy_with_a_script(redis_server: RedisServer, timeout: float = 10.0) -> Iterator[None]:
    """Run a looping script until the block ends (Redis answers BUSY meanwhile), then end it with SCRIPT KILL."""
    with contextlib.closing(redis_server.client()) as conn:
        conn.config_set("busy-reply-threshold", BUSY_AFTER_MS)
    runner = threading.Thread(target=_loop, args=(redis_server,), daemon=True)
    runner.start()
    try:
        wait_for(lambda: _is_busy(redis_server), timeout, what="Redis to answer BUSY")
        yield
    finally:
        with contextlib.closing(redis_server.client()) as killer:
            killer.script_kill()
        runner.join(timeout)


def _loop(redis_server: RedisServer) -> None:
    with contextlib.closing(redis_server.client(socket_timeout=30)) as conn, contextlib.suppress(redis.ResponseError):
        conn.eval("while true do end", 0)  # until SCRIPT KILL ends it with an error


def _is_busy(redis_server: RedisServer) -> bool:
    with contextlib.closing(redis_server.client()) as conn:
        try:
            conn.ping()
        except redis.ResponseError as exc:
            return str(exc).startswith("BUSY")
        return False
