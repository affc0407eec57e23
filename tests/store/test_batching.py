"""Tests of the command batcher against a real Redis, with real threads as the concurrent callers."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from testbed.ports import free_port
from vora.core.settings import Settings
from vora.store.batching import CommandBatcher, batcher_for
from vora.store.client import connect, tracked_sends

# A script that keeps Redis busy, so that the round trip carrying it stays in flight meanwhile.
BUSY = (
    "local t = redis.call('TIME') local until_us = t[1] * 1e6 + t[2] + tonumber(ARGV[1]) * 1000 "
    "repeat t = redis.call('TIME') until t[1] * 1e6 + t[2] >= until_us return 1"
)


@pytest.fixture
def batcher(redisdb: redis.Redis, redis_url: str) -> CommandBatcher:
    """Build a batcher on the test's Redis (flushed by redisdb), as the app's REST client connects to it."""
    return CommandBatcher(connect(redis_url, 2.0, 8, 0.5), wait_timeout=5.0)


def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait for a condition another thread makes true, failing after timeout."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.001)


@pytest.fixture
def busy_round_trip(batcher: CommandBatcher) -> Iterator[Callable[[int], None]]:
    """Start a round trip that keeps Redis busy for the given milliseconds, and wait for it to end at teardown."""
    threads: list[threading.Thread] = []

    def start(milliseconds: int) -> None:
        thread = threading.Thread(target=batcher.execute, args=("EVAL", BUSY, 0, milliseconds))
        thread.start()
        threads.append(thread)
        until(batcher.in_flight)

    yield start
    for thread in threads:
        thread.join(10)


def run_in_thread(call: Callable[[], Any]) -> Callable[[], Any]:
    """Start a call in a thread; return a function that waits for it and gives what it returned or raised."""
    done: list[Any] = []

    def run() -> None:
        try:
            done.append(call())
        except Exception as exc:  # noqa: BLE001 - the test looks at what the caller got
            done.append(exc)

    thread = threading.Thread(target=run)
    thread.start()

    def result() -> Any:
        thread.join(10)
        return done[0]

    return result


def run_concurrently(calls: list[Callable[[], Any]]) -> list[Any]:
    """Run each call in a thread of its own and return what each returned or raised, in order."""
    results: list[Any] = [None] * len(calls)

    def run(index: int) -> None:
        try:
            results[index] = calls[index]()
        except Exception as exc:  # noqa: BLE001 - the test looks at what each caller got
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    return results


def test_a_lone_command_goes_at_once_in_a_round_trip_of_its_own(batcher: CommandBatcher) -> None:
    """With nothing in flight a command is sent straight away and answered with its own reply."""
    assert batcher.execute("ECHO", "alone") == b"alone"
    assert (batcher.round_trips, batcher.commands) == (1, 1)
    assert not batcher.in_flight()


def test_commands_issued_during_a_round_trip_share_the_next_one(
    batcher: CommandBatcher, busy_round_trip: Callable[[int], None]
) -> None:
    """Callers arriving while a round trip is in flight are all sent in the next one, each getting its own reply."""
    busy_round_trip(300)
    queued = threading.Barrier(11)

    def echo(n: int) -> Callable[[], Any]:
        def call() -> Any:
            queued.wait(5)
            return batcher.execute("ECHO", f"caller-{n}")

        return call

    replies = run_concurrently([echo(n) for n in range(10)] + [lambda: queued.wait(5)])
    assert replies[:10] == [f"caller-{n}".encode() for n in range(10)]
    assert batcher.commands == 11
    assert batcher.round_trips <= 3  # the busy script's, then the ten queued behind it: one, unless a thread was late


def test_an_error_reply_reaches_only_its_caller(
    batcher: CommandBatcher, busy_round_trip: Callable[[int], None], redisdb: redis.Redis
) -> None:
    """A command Redis refuses raises for its caller alone; the others of its round trip get their replies."""
    redisdb.set("text", "not a hash")
    busy_round_trip(200)
    replies = run_concurrently(
        [
            lambda: batcher.execute("HGET", "text", "field"),
            lambda: batcher.execute("SET", "fine", "1"),
            lambda: batcher.execute("GET", "text"),
        ]
    )
    assert isinstance(replies[0], redis.ResponseError)
    assert "WRONGTYPE" in str(replies[0])
    assert replies[1:] == [True, b"not a hash"]


def test_replies_are_parsed_as_redis_py_parses_the_command(batcher: CommandBatcher, redisdb: redis.Redis) -> None:
    """A batched command's reply has the type redis-py's own method for it returns."""
    redisdb.sadd("set", "a", "b")
    assert batcher.execute("SMEMBERS", "set") == redisdb.smembers("set")
    assert batcher.execute("SISMEMBER", "set", "a") == redisdb.sismember("set", "a")


def test_a_caller_that_gives_up_withdraws_its_command(redisdb: redis.Redis, redis_url: str) -> None:
    """A command whose caller stopped waiting before its round trip left is never sent, and the batcher goes on."""
    impatient = CommandBatcher(connect(redis_url, 2.0, 8, 0.5), wait_timeout=0.05)
    busy = threading.Thread(target=impatient.execute, args=("EVAL", BUSY, 0, 400))
    busy.start()
    until(impatient.in_flight)
    with pytest.raises(redis.TimeoutError):
        impatient.execute("SET", "withdrawn", "1")
    busy.join(10)
    assert impatient.execute("SET", "after", "1") is True
    assert redisdb.get("withdrawn") is None
    assert redisdb.get("after") == b"1"
    assert not impatient.in_flight()


def test_a_round_trip_that_fails_answers_every_caller_and_the_next_one_is_tried() -> None:
    """When Redis cannot be reached each caller gets the connection error, and later commands are still sent."""
    client = connect(f"redis://127.0.0.1:{free_port()}/0", 0.5, 4, 0.5)
    batcher = CommandBatcher(client, wait_timeout=5.0)
    with pytest.raises(redis.ConnectionError):
        batcher.execute("PING")
    with pytest.raises(redis.ConnectionError):
        batcher.execute("PING")
    assert batcher.round_trips == 2
    assert not batcher.in_flight()


def test_commands_queued_behind_a_round_trip_that_timed_out_fail_with_it_unsent(
    redisdb: redis.Redis, redis_url: str
) -> None:
    """When a round trip times out, the commands queued meanwhile get the same error at once and are never sent."""
    hasty = CommandBatcher(connect(redis_url, 0.3, 8, 0.3), wait_timeout=5.0)
    busy = run_in_thread(lambda: hasty.execute("EVAL", BUSY, 0, 800))
    until(hasty.in_flight)
    started = time.monotonic()
    with pytest.raises(redis.TimeoutError):
        hasty.execute("SET", "queued", "1")
    assert time.monotonic() - started < 0.5  # with the 0.3 s round trip it queued behind, not after its own 0.3 s
    assert isinstance(busy(), redis.TimeoutError)
    redisdb.ping()  # answered once the busy script has ended
    assert redisdb.get("queued") is None
    assert hasty.execute("SET", "later", "1") is True


def test_batching_is_off_when_asked_or_on_cluster(redisdb: redis.Redis) -> None:
    """The app batches on a standalone or Sentinel client unless VORA_REDIS_BATCHING is off."""
    assert batcher_for(redisdb, Settings()) is not None
    assert batcher_for(redisdb, Settings(redis_batching=False)) is None


def tracked(call: Callable[[], Any]) -> Callable[[], tuple[Any, bool]]:
    """Wrap a call in tracked_sends; return what it returned or raised, and whether its command may have gone out."""

    def run() -> tuple[Any, bool]:
        with tracked_sends() as sends:
            try:
                return call(), sends.sent
            except redis.RedisError as exc:
                return exc, sends.sent

    return run


def test_a_command_another_caller_sent_counts_as_sent_for_its_own_caller(
    batcher: CommandBatcher, busy_round_trip: Callable[[int], None]
) -> None:
    """Whoever leads the round trip, each caller's tracked_sends learns that its command went out."""
    busy_round_trip(300)
    callers = [run_in_thread(tracked(functools.partial(batcher.execute, "SET", f"k{n}", "1"))) for n in range(3)]
    until(lambda: len(batcher._queued) == 3)  # all three wait for the busy round trip to end
    assert [caller() for caller in callers] == [(True, True)] * 3
    assert batcher.round_trips == 2  # the busy script's, then one carrying the three


def test_a_command_that_failed_unsent_counts_as_not_sent(redisdb: redis.Redis, redis_url: str) -> None:
    """A round trip that timed out went out; what queued behind it fails unsent, and its caller is told so."""
    hasty = CommandBatcher(connect(redis_url, 0.3, 8, 0.3), wait_timeout=5.0)
    busy = run_in_thread(tracked(lambda: hasty.execute("EVAL", BUSY, 0, 800)))
    until(hasty.in_flight)
    error, sent = tracked(lambda: hasty.execute("SET", "queued", "1"))()
    assert isinstance(error, redis.TimeoutError)
    assert sent is False
    error, sent = busy()
    assert isinstance(error, redis.TimeoutError)
    assert sent is True
    redisdb.ping()  # answered once the busy script has ended
