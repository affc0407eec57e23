"""One per worker: the readiness watches and the due-time queue that wake the sockets.

A socket is woken by three things, each from the reactor and never blocking there: its peer's
bytes arriving (a one-shot read watch), a due time it asked for (pings, heartbeats, retries, all
from one heap), and the hub's wake(). Under gevent an idle socket has no greenlet: it is parked,
and its wake-up (a Wakeup) starts its work in a new greenlet, which parks it again when done;
the watches are libev io watchers and the heap is served by one libev timer. In a process gevent
did not patch (the no-server tests, a threaded server) one thread does both, and each socket's
own thread sleeps on an event.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import math
import selectors
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import gevent
import gevent.event
import gevent.monkey

Callback = Callable[[], None]


class Signal(Protocol):
    """A wake-up flag a greenlet (or thread) waits on without a timeout."""

    def set(self) -> None:
        """Wake the waiter (or make its next wait return at once)."""
        ...

    def is_set(self) -> bool:
        """Tell whether a wake-up is pending."""
        ...

    def clear(self) -> None:
        """Consume the pending wake-up."""
        ...

    def wait(self) -> Any:
        """Block until set."""
        ...


class Wakeup:
    """A parked socket's wake-up flag: the first set() after park() starts the socket's work in a new greenlet.

    It replaces the socket's gevent event once the socket gave its greenlet up, and is only ever set
    from the worker's one thread (reactor callbacks, the hub's greenlet), so a flag is enough.
    """

    __slots__ = ("_pending", "_resume")

    def __init__(self, pending: bool) -> None:
        self._pending = pending
        self._resume: Callback | None = None

    def set(self) -> None:
        """Mark a wake-up; start the parked work, if any, in a greenlet of its own (never blocks)."""
        self._pending = True
        resume = self._resume
        if resume is not None:
            self._resume = None
            gevent.spawn(resume)

    def is_set(self) -> bool:
        """Tell whether a wake-up is pending."""
        return self._pending

    def clear(self) -> None:
        """Consume the pending wake-up."""
        self._pending = False

    def wait(self) -> None:
        """Refuse: a parked socket has no greenlet to block."""
        raise RuntimeError("a parked socket is resumed, never waited on")

    def park(self, resume: Callback) -> bool:
        """Run resume on the next set(); return False, keeping nothing, when a wake-up is pending already."""
        if self._pending:
            return False
        self._resume = resume
        return True


class ReadWatch(Protocol):
    """A one-shot watch on a socket: its callback runs once, in the reactor, when the socket is readable."""

    def arm(self) -> None:
        """Watch for the next readable moment (no-op when already armed)."""
        ...

    def close(self) -> None:
        """Stop watching for good, before the socket closes."""
        ...


class Reactor(Protocol):
    """A worker's watches and due times."""

    # True when every greenlet of the worker runs in one thread and switches only where it waits, so
    # that the hub's greenlet may write a frame to a socket whose own greenlet is not writing.
    cooperative: bool

    def signal(self) -> Signal:
        """Return a new wake-up flag of this reactor's kind."""
        ...

    def watch_readable(self, sock: socket.socket, callback: Callback) -> ReadWatch:
        """Return an unarmed one-shot read watch on sock."""
        ...

    def call_at(self, when: float, callback: Callback) -> None:
        """Run callback in the reactor at or after the monotonic time when; it must never block."""
        ...


class DueTimes:
    """A heap of (monotonic time, callback), popped in time order."""

    __slots__ = ("_heap", "_order")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Callback]] = []
        self._order = itertools.count()  # breaks ties: callbacks do not compare

    def push(self, when: float, callback: Callback) -> bool:
        """Queue a callback; return True when it is now the earliest."""
        heapq.heappush(self._heap, (when, next(self._order), callback))
        return self._heap[0][0] == when

    def next_due(self) -> float:
        """Return the earliest due time (infinity when empty)."""
        return self._heap[0][0] if self._heap else math.inf

    def pop_due(self, now: float) -> list[Callback]:
        """Remove and return the callbacks due at now, earliest first."""
        due = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            due.append(heapq.heappop(heap)[2])
        return due

    def __len__(self) -> int:
        return len(self._heap)


class _GeventWatch:
    __slots__ = ("_armed", "_callback", "_watcher")

    def __init__(self, loop: Any, fd: int, callback: Callback) -> None:
        self._watcher = loop.io(fd, 1)  # 1: EV_READ
        self._callback = callback
        self._armed = False

    def arm(self) -> None:
        if not self._armed:
            self._armed = True
            self._watcher.start(self._fire)

    def _fire(self) -> None:
        self._watcher.stop()  # one-shot: a level-triggered watch would fire every loop until read
        self._armed = False
        self._callback()

    def close(self) -> None:
        self._armed = False
        self._watcher.stop()
        self._watcher.close()


class GeventReactor:
    """The reactor of a gevent worker: libev io watchers, and one libev timer serving the heap."""

    cooperative = True

    def __init__(self) -> None:
        self._loop = gevent.get_hub().loop
        self._due = DueTimes()
        self._timer: Any = None
        self._timer_at = math.inf

    def signal(self) -> Signal:
        """Return a gevent event: set from the hub's callbacks without a switch."""
        event: Signal = gevent.event.Event()
        return event

    def watch_readable(self, sock: socket.socket, callback: Callback) -> ReadWatch:
        """Return an unarmed libev read watch on sock."""
        return _GeventWatch(self._loop, sock.fileno(), callback)

    def call_at(self, when: float, callback: Callback) -> None:
        """Queue callback; re-arm the timer only when it is now the earliest."""
        if self._due.push(when, callback) and when < self._timer_at:
            self._arm(when)

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.stop()
            self._timer.close()
        self._timer_at = when
        self._timer = self._loop.timer(max(0.0, when - time.monotonic()))
        self._timer.start(self._fire)

    def _fire(self) -> None:
        self._timer_at = math.inf
        for callback in self._due.pop_due(time.monotonic()):
            callback()
        if self._due:
            self._arm(self._due.next_due())


class _ThreadWatch:
    __slots__ = ("_armed", "_callback", "_reactor", "_sock")

    def __init__(self, reactor: ThreadReactor, sock: socket.socket, callback: Callback) -> None:
        self._reactor = reactor
        self._sock = sock
        self._callback = callback
        self._armed = False

    def arm(self) -> None:
        with self._reactor.lock:
            if self._armed:
                return
            self._armed = True
            self._reactor.selector.register(self._sock, selectors.EVENT_READ, self)
        self._reactor.nudge()

    def fire(self) -> None:
        with self._reactor.lock:
            if not self._armed:
                return
            self._armed = False
            self._reactor.selector.unregister(self._sock)
        self._callback()

    def close(self) -> None:
        with self._reactor.lock:
            if self._armed:
                self._armed = False
                self._reactor.selector.unregister(self._sock)


class ThreadReactor:
    """The reactor of a process gevent did not patch: one daemon thread with a selector and the heap."""

    cooperative = False  # threads preempt each other: only a socket's own thread writes to it

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.selector = selectors.DefaultSelector()
        self._due = DueTimes()
        self._nudge_in, self._nudge_out = socket.socketpair()
        self._nudge_in.setblocking(False)
        self._nudge_out.setblocking(False)
        self.selector.register(self._nudge_out, selectors.EVENT_READ, None)
        threading.Thread(target=self._run, name="vora-ws-reactor", daemon=True).start()

    def signal(self) -> Signal:
        """Return a threading event: set from the reactor thread."""
        return threading.Event()

    def watch_readable(self, sock: socket.socket, callback: Callback) -> ReadWatch:
        """Return an unarmed selector watch on sock."""
        return _ThreadWatch(self, sock, callback)

    def call_at(self, when: float, callback: Callback) -> None:
        """Queue callback; wake the thread when it is now the earliest."""
        with self.lock:
            earliest = self._due.push(when, callback)
        if earliest:
            self.nudge()

    def nudge(self) -> None:
        """Make the thread look at its selector and heap again."""
        with contextlib.suppress(BlockingIOError):  # a nudge is pending already
            self._nudge_in.send(b"\0")

    def _run(self) -> None:
        while True:
            with self.lock:
                timeout = max(0.0, self._due.next_due() - time.monotonic())
            ready = self.selector.select(None if timeout == math.inf else timeout)
            for key, _ in ready:
                if key.data is None:
                    self._nudge_out.recv(4096)
                else:
                    key.data.fire()
            with self.lock:
                due = self._due.pop_due(time.monotonic())
            for callback in due:
                callback()


_reactors: dict[str, Reactor] = {}  # this process's one reactor, under the key "worker"
_reactors_lock = threading.Lock()


def worker_reactor() -> Reactor:
    """Return this process's reactor, made on first use (after gunicorn forked and gevent patched)."""
    with _reactors_lock:
        if "worker" not in _reactors:
            patched = gevent.monkey.is_module_patched("socket")
            _reactors["worker"] = GeventReactor() if patched else ThreadReactor()
        return _reactors["worker"]


def call_every(reactor: Reactor, seconds: float, callback: Callback) -> None:
    """Run callback in the reactor every seconds, for the life of the process; it must never block."""

    def tick() -> None:
        callback()
        reactor.call_at(time.monotonic() + seconds, tick)

    reactor.call_at(time.monotonic() + seconds, tick)
