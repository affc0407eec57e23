"""Send the commands concurrent callers issue while a round trip is in flight together, in the next one."""

from __future__ import annotations

import threading
from typing import Any

import redis

from vora.core.settings import Settings
from vora.store.client import is_cluster, note_sent, tracked_sends


class _Slot:
    """One caller's command on its way: its reply once there, and whether the caller must send the next batch."""

    __slots__ = ("done", "leads", "reply", "sent", "taken")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.reply: Any = None
        self.leads = False
        self.taken = False  # in a round trip under way: withdrawing it no longer keeps it from Redis
        self.sent = False  # a byte of the round trip that carried it may have reached Redis


class CommandBatcher:
    """Pipeline the commands of concurrent callers (auto-pipelining), each caller getting its own reply or error.

    A caller that finds no round trip in flight sends its command at once: nothing waits for company.
    Callers that arrive meanwhile queue, and when the round trip ends, the first of them sends all
    queued commands as one non-transactional pipeline and the others are woken with their replies.
    Under load, one write and one read then carry many requests' commands, for the worker and for
    Redis. Not on Cluster, where one pipeline would span nodes.
    """

    def __init__(self, client: redis.Redis, wait_timeout: float) -> None:
        self._client = client
        self._wait_timeout = wait_timeout
        self._lock = threading.Lock()
        self._queued: list[tuple[tuple[Any, ...], _Slot]] = []
        self._sending = False
        self.round_trips = 0
        self.commands = 0

    def execute(self, *args: Any) -> Any:
        """Run one command in the next round trip and return its reply, or raise its error."""
        slot = _Slot()
        with self._lock:
            self._queued.append((args, slot))
            leads = not self._sending
            self._sending = True
        try:
            if not leads:
                self._wait(slot)
                if not slot.leads:
                    return _answer(slot)
            self._send_queued()
            return _answer(slot)
        finally:
            # The caller's tracked_sends learns what the round trip did for its command, whoever sent it;
            # a command given up on while its round trip was under way may have gone out.
            if slot.sent or (slot.taken and not slot.done.is_set()):
                note_sent()

    def in_flight(self) -> bool:
        """Tell whether a round trip is under way."""
        return self._sending

    def _wait(self, slot: _Slot) -> None:
        """Wait for a queued command's reply, or for the turn to send; withdraw it if that takes too long."""
        try:
            arrived = slot.done.wait(self._wait_timeout)
        except BaseException:
            self._withdraw(slot)
            raise
        if not arrived and not self._withdraw(slot):
            raise redis.TimeoutError(f"no Redis reply within {self._wait_timeout} s of queueing the command")

    def _withdraw(self, slot: _Slot) -> bool:
        """Take a command its caller gives up on out of the queue, passing its turn to send on if it had it.

        Return True when its reply came in the meantime after all (nothing is then undone).
        """
        with self._lock:
            if slot.done.is_set() and not slot.leads:
                return True
            self._queued = [(args, queued) for args, queued in self._queued if queued is not slot]
            if slot.leads:
                slot.leads = False
                self._pass_turn()
            return False

    def _send_queued(self) -> None:
        """Send every queued command in one pipeline and hand each caller its reply; then pass the turn on."""
        with self._lock:
            batch, self._queued = self._queued, []
            for _, taken in batch:
                taken.taken = True
        carried = len(batch)
        sends = None
        try:
            with tracked_sends() as sends:
                replies = self._round_trip(batch)
        except BaseException as exc:
            # Interrupted (a killed greenlet): the others must not wait for replies that will not come.
            error = redis.ConnectionError(f"the round trip carrying this command was interrupted: {exc!r}")
            replies = [error] * len(batch)
            raise
        finally:
            went_out = sends is None or sends.sent  # unknown when interrupted before tracking began
            for index, ((_, slot), reply) in enumerate(zip(batch, replies, strict=True)):
                slot.reply = reply
                slot.leads = False
                slot.sent = went_out and index < carried  # what failed with it unsent never went out
                slot.done.set()
            with self._lock:
                self._pass_turn()

    def _round_trip(self, batch: list[tuple[tuple[Any, ...], _Slot]]) -> list[Any]:
        """Send a batch's commands in one pipeline and return their replies; what queued meanwhile joins a failure."""
        pipe = self._client.pipeline(transaction=False)
        for args, _ in batch:
            pipe.execute_command(*args)  # type: ignore[no-untyped-call] # redis-py leaves it unannotated
        try:
            replies: list[Any] = pipe.execute(raise_on_error=False)
        except redis.RedisError as exc:  # the round trip itself failed: every command of it did
            replies = [exc] * len(batch)
            if isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):
                # Redis is unreachable (after the client's retries) or hung: what queued meanwhile has
                # not been sent, so it fails now, as it would have alone, rather than wait out its own.
                with self._lock:
                    unsent, self._queued = self._queued, []
                batch += unsent
                replies += [exc] * len(unsent)
        self.round_trips += 1
        self.commands += len(batch)
        return replies

    def _pass_turn(self) -> None:
        """Let the first queued caller send the next round trip, or mark none in flight (lock held)."""
        if self._queued:
            first = self._queued[0][1]
            first.leads = True
            first.done.set()
        else:
            self._sending = False


def _answer(slot: _Slot) -> Any:
    """Return a slot's reply, raising it if it is an error."""
    if isinstance(slot.reply, Exception):
        raise slot.reply
    return slot.reply


def batcher_for(client: redis.Redis, settings: Settings) -> CommandBatcher | None:
    """Return the batcher the hot REST commands go through, or None when batching is off or Redis is a Cluster."""
    if not settings.redis_batching or is_cluster(client):
        return None
    # A round trip in flight ends within VORA_REDIS_TIMEOUT, or three of them with both retries and their backoff.
    return CommandBatcher(client, wait_timeout=3 * settings.redis_timeout + 1.0)
