"""The event stream: an explicit connection state machine that delivers each event once, in order, across drops.

idle --start--> connecting --open--> open --drop--> reconnecting --wait--> connecting ...
                    |                   |                                      |
                    +----refused------> reconnecting (Retry-After + backoff)   |
any state --logout/revoked/replaced twice/close()/setup refused--> closed(reason)  <-+
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import inspect
import json
import math
import re
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from vora_client.client import ConnectionType, PushRegistration, Session, VoraClient
from vora_client.errors import (
    AccessTokenProviderFailed,
    ConnectionFailed,
    MalformedFrame,
    NotFound,
    ProxyAuthenticationRequired,
    ServiceUnavailable,
    StreamClosed,
    TooManyRequests,
    Unauthorized,
    VoraError,
)
from vora_client.fallback import DEFAULT_FALLBACK_AFTER, AutoTransport, Fallback, TransportChoice, choose_transport
from vora_client.proxy import ProxySetting
from vora_client.reconnect import ABNORMAL_CLOSURE, Next, ReconnectPolicy, after_close, after_termination
from vora_client.sse import event_stream_url, event_stream_url_beside
from vora_client.transport import Closed, Connection, Transport, websocket_url

Envelope = dict[str, Any]
# Rule 6 of docs/clients.md: no frame for twice the heartbeat interval plus 5 s is a dead connection; the interval is
# 30 s until the server announces its own (channelOpened's heartbeatIntervalSeconds, heartbeat's intervalSeconds).
DEFAULT_HEARTBEAT_INTERVAL = 30.0
HEARTBEAT_GRACE = 5.0
LIFECYCLE_TYPES = frozenset({"heartbeat", "channelTerminated", "resumeGap", "channelOpened"})
# Setups after channelTerminated replaced allowed per window: two copies of an app past the server's session
# limit evict each other, so one more replaced within the window closes the stream (reason "replaced"). A session
# set up and refused (401) at its first open counts as replaced too: a newer one ended it before any stream could
# carry the notice, and left uncounted such evictions would let the carousel slip past the guard.
DEFAULT_MAX_REPLACED_SETUPS = 1
# Twice the backoff cap: a carousel slowed down by backoff still shows within the window.
DEFAULT_REPLACED_WINDOW = 60.0
# How long ending the stream waits for its connection to close: a close handshake is one round trip, and an app
# leaving asyncio.run must not wait out the WebSocket library's 10 s on a dead path.
CLOSE_TIMEOUT = 1.0
# How many state transitions a stream keeps (EventStream.changes); on_state sees every one.
CHANGES_KEPT = 1000


class State(enum.Enum):
    """Where the stream's connection is."""

    IDLE = "idle"
    CONNECTING = "connecting"
    OPEN = "open"
    RECONNECTING = "reconnecting"
    CLOSED = "closed"


@dataclass(frozen=True)
class StateChange:
    """One transition: from, to, and why (a close code, a channelTerminated reason, a refusal, the wait ahead)."""

    previous: State
    current: State
    reason: str = ""
    code: int | None = None
    wait: float | None = None
    transport: str = ""


_EVENT_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")
MAX_EVENT_ID_PART = 2**64 - 1  # each part of a Redis stream id is an unsigned 64-bit integer


def event_position(event_id: str) -> tuple[int, int]:
    """Return an eventId's position, compared part by part as numbers (never as strings)."""
    milliseconds, _, sequence = event_id.partition("-")
    return int(milliseconds), int(sequence)


def is_event_id(value: str) -> bool:
    """Tell whether VORA takes value as a lastEventId: `<ms>-<seq>`, 1 to 20 digits each, each at most 2^64-1."""
    return _EVENT_ID.fullmatch(value) is not None and max(event_position(value)) <= MAX_EVENT_ID_PART


def _envelope(text: str) -> Envelope:
    """Read one frame as an event envelope (a JSON object, a string type, object data), or raise MalformedFrame."""
    try:
        envelope = json.loads(text)
    except ValueError as exc:
        raise MalformedFrame(text, f"not JSON: {exc}") from None
    if not isinstance(envelope, dict):
        raise MalformedFrame(text, "not a JSON object")
    if not isinstance(envelope.get("type"), str) or not isinstance(envelope.get("data"), dict):
        raise MalformedFrame(text, "no string type or no object data")
    return envelope


class _SessionOver(Exception):
    """The session ended and this stream has no client to set up another."""


class _EndedBeforeSubscription(Exception):
    """The session set up for the stream ended before its subscription went through (VORA answered 404)."""

    def __init__(self, cause: NotFound) -> None:
        super().__init__(str(cause))
        self.cause = cause


def _seconds(value: object) -> float | None:
    """Return an announced number of seconds, or None when it is none (absent, not a number, not above 0)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        return None
    return float(value)


class _FromClient(enum.Enum):
    """The default of EventStream's proxy: the client's setting (None means no proxy, as on VoraClient)."""

    SETTING = "the client's"


FROM_CLIENT = _FromClient.SETTING

Callback = Callable[[Any], object]
_END = object()


async def _call(callback: Callback | None, value: Any) -> None:
    if callback is None:
        return
    result = callback(value)
    if inspect.isawaitable(result):
        await result


class EventStream:
    """Hold one identity's event stream open: resume after drops, set up again when the session ends, stop on logout.

    Iterate with `async for envelope in stream`, or pass callbacks; both see every event once, in order
    (stream events and the lifecycle events resumeGap and channelTerminated; heartbeats only reset the
    dead-connection clock, and channelOpened only moves last_event_id to where the connection starts).
    With on_event, the iterator holds the events from its first read on: before it, nothing is queued.
    A frame that is no event envelope is skipped and passed to on_error as a MalformedFrame; the stream reads on.
    """

    def __init__(
        self,
        client: VoraClient | None,
        identity: str,
        *,
        session: Session | None = None,
        last_event_id: str | None = None,
        events: Sequence[str] | None = None,
        subscribe_all: bool = False,
        hold_up_mode: bool = False,
        push: PushRegistration | None = None,
        transport: Transport | TransportChoice = "auto",
        fallback_after: int = DEFAULT_FALLBACK_AFTER,
        max_replaced_setups: float = DEFAULT_MAX_REPLACED_SETUPS,
        replaced_window: float = DEFAULT_REPLACED_WINDOW,
        ws_url: str | None = None,
        sse_url: str | None = None,
        proxy: ProxySetting | _FromClient = FROM_CLIENT,
        policy: ReconnectPolicy | None = None,
        heartbeat_timeout: float | None = None,
        open_timeout: float = 10.0,
        queue_size: int = 1000,
        on_event: Callback | None = None,
        on_state: Callback | None = None,
        on_resume_gap: Callback | None = None,
        on_position: Callable[[str], object] | None = None,
        on_fallback: Callable[[Fallback], object] | None = None,
        on_error: Callable[[Exception], object] | None = None,
    ) -> None:
        self.client = client
        self.identity = identity
        self.session = session
        self.last_event_id = last_event_id
        self.close_reason: str | None = None
        self.error: BaseException | None = None
        self.state = State.IDLE
        self._subscription = (list(events or ()), subscribe_all) if events is not None or subscribe_all else None
        self._setup_options: dict[str, Any] = {"hold_up_mode": hold_up_mode, "push": push}
        if isinstance(transport, str):
            if client is None and ws_url is None and sse_url is None:
                raise ValueError("an EventStream without a client needs ws_url, sse_url or a transport")
            if client is not None:
                ws_url = ws_url or websocket_url(client.base_url)
                sse_url = sse_url or event_stream_url(client.base_url)
            elif ws_url is not None:
                sse_url = sse_url or event_stream_url_beside(ws_url)
            elif transport != "sse":
                raise ValueError(f"transport {transport!r} needs ws_url")
            # The client's proxy setting unless the stream names its own (a stream without a client: the environment).
            if proxy is FROM_CLIENT:
                proxy = client.proxy if client is not None else True
            transport = choose_transport(transport, ws_url or "", sse_url or "", fallback_after, proxy)
        self._transport: Transport = transport
        self._policy = policy or ReconnectPolicy()
        # None: follow the interval the server announces (as the TypeScript SDK's heartbeatTimeoutMs left unset).
        self._heartbeat_fixed = heartbeat_timeout is not None
        self._heartbeat_timeout = (
            heartbeat_timeout if heartbeat_timeout is not None else DEFAULT_HEARTBEAT_INTERVAL * 2 + HEARTBEAT_GRACE
        )
        self._open_timeout = open_timeout
        self._queue: asyncio.Queue[object] = asyncio.Queue(maxsize=queue_size)
        # With on_event, the queue fills only once the app reads it (async for, next_event): an app that takes every
        # event through on_event never reads it, and a queue that filled regardless stopped the stream for good once
        # queue_size events (a channelTerminated at each session's end among them) were delivered.
        self._read_by_app = on_event is None
        self._on_event = on_event
        self._on_state = on_state
        self._on_resume_gap = on_resume_gap
        self._on_position = on_position
        self._on_fallback = on_fallback
        self._on_error = on_error
        self._max_replaced_setups = max_replaced_setups
        self._replaced_window = replaced_window
        self._replaced_at: list[float] = []
        self._set_up_not_opened = False  # the session comes from a setup whose stream has not opened yet
        # A session set up whose subscription has not gone through yet (a cut connection, a 503): the next attempt
        # subscribes on it again rather than setting up another, which would leave this one to count toward the
        # user's cap on the identity and, past it, evict the user's oldest session (another of their devices).
        self._unsubscribed: Session | None = None
        self._connection: Connection | None = None
        self._ending = False  # _finish has begun: the stream is closing, whatever it awaits on the way
        self._task: asyncio.Task[None] | None = None
        # The newest CHANGES_KEPT: a softphone's stream lives for weeks, and each reconnect adds two or three.
        self._changes: deque[StateChange] = deque(maxlen=CHANGES_KEPT)
        self._session_over_reason = ""
        self._open_waiters: list[asyncio.Future[State]] = []
        self._reconnect_window: float | None = None

    @property
    def reconnect_window(self) -> float | None:
        """Return the reconnect window W (seconds) the server last announced to this stream, None until one arrives.

        Each channelOpened and heartbeat carries it (reconnectWindowSeconds; the latest wins, kept across
        reconnects). It bounds the first wait after a crowd drop (1006, 1001, 1011, a dead connection,
        maintenance); until a server announces one (an older server), the policy's crowd_window (20 s) does.
        """
        return self._reconnect_window

    @property
    def changes(self) -> list[StateChange]:
        """Return the transitions so far, oldest first: the newest CHANGES_KEPT of them."""
        return list(self._changes)

    async def start(self) -> EventStream:
        """Start in the background (setup unless a session was given, subscription, connection); return at once.

        Await wait_open() before acting on what the stream should see (publishing, placing a call): until the
        stream is open, the session may not be set up yet.
        """
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"vora-stream-{self.identity}")
        return self

    async def wait_open(self, timeout: float | None = None) -> None:
        """Wait until the stream is open (at once if it is), as the TypeScript SDK's stream.opened() does.

        Once open, the session is set up and subscribed and the connection's position is fixed: every event
        published from then on reaches the stream. Raise StreamClosed if the stream closes first, and
        TimeoutError after timeout seconds (None: no limit; the stream keeps trying either way).
        """
        async with asyncio.timeout(timeout):
            state = self.state
            while state is not State.OPEN:
                if state is State.CLOSED:
                    raise StreamClosed(self.close_reason or "closed")
                waiter: asyncio.Future[State] = asyncio.get_running_loop().create_future()
                self._open_waiters.append(waiter)
                try:
                    state = await waiter
                finally:
                    if waiter in self._open_waiters:
                        self._open_waiters.remove(waiter)

    async def subscribe(self, events: Sequence[str] = (), *, subscribe_all: bool = False) -> None:
        """Change what the stream receives: at once if a session is up (VoraError if refused), and after each setup."""
        self._subscription = (list(events), subscribe_all)
        if self.session is not None and self.client is not None and not self._closed():
            await self.client.subscribe(self.identity, events, subscribe_all=subscribe_all)

    async def close(self) -> None:
        """Close the stream for good from the app's side."""
        await self._finish("closed by the app")
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def wait_closed(self) -> str:
        """Wait until the stream is closed and return why."""
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        return self.close_reason or ""

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> Envelope:
        self._read_by_app = True
        item = await self._queue.get()
        if item is _END:
            self._queue.put_nowait(_END)  # later readers end too
            raise StopAsyncIteration
        envelope: Envelope = item  # type: ignore[assignment] # only envelopes and _END are queued
        return envelope

    async def next_event(self, timeout: float | None = None) -> Envelope:
        """Return the next event, raising StreamClosed once the stream has ended."""
        try:
            async with asyncio.timeout(timeout):  # not wait_for, which drops a cancellation on Python 3.11 (_read)
                return await self.__anext__()
        except StopAsyncIteration:
            raise StreamClosed(self.close_reason or "closed") from None

    def _closed(self) -> bool:
        """Tell whether the stream is closed or closing (its connection may still be finishing its close)."""
        return self._ending

    async def _transition(self, state: State, **why: Any) -> None:
        if self.state is State.CLOSED or (self._ending and state is not State.CLOSED):
            return  # closed is final: a step that was under way as the stream closed changes nothing
        change = StateChange(self.state, state, transport=self._transport.name, **why)
        self.state = state
        self._changes.append(change)
        if state in {State.OPEN, State.CLOSED}:
            waiters, self._open_waiters = self._open_waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(state)
        await _call(self._on_state, change)

    async def _finish(self, reason: str, error: BaseException | None = None) -> None:
        if self._ending:
            return
        self._ending = True  # before any await: a read that ends as the connection closes must not reconnect
        self.close_reason = reason
        self.error = error
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    await connection.close()
        try:
            await self._transition(State.CLOSED, reason=reason)  # on_state may raise: the readers end regardless
        finally:
            while True:  # the end marker must get in even when the app stopped reading
                try:
                    self._queue.put_nowait(_END)
                    break
                except asyncio.QueueFull:
                    self._queue.get_nowait()

    async def _set_up(self) -> None:
        if self.client is None:
            raise _SessionOver
        # connectionType says which transport the session means to use (the token opens either).
        connection_type: ConnectionType = "ServerSentEvents" if self._transport.name == "sse" else "WebSocket"
        session = self._unsubscribed or await self.client.setup(
            self.identity, connection_type=connection_type, **self._setup_options
        )
        self._unsubscribed = session
        if self._subscription is not None:
            events, subscribe_all = self._subscription
            try:
                await self.client.subscribe(self.identity, events, subscribe_all=subscribe_all)
            except NotFound as exc:  # it ended meanwhile (evicted, or expired during a backoff): set up another
                self._unsubscribed = None
                raise _EndedBeforeSubscription(exc) from exc
        # Streamed only once subscribed: a new session receives every event type until its subscription is applied.
        self._unsubscribed = None
        self.session = session

    async def _run(self) -> None:
        try:
            await self._follow()
        except asyncio.CancelledError:
            # Cancelled from outside (asyncio.run leaving with the stream open, a task group): the stream ends here,
            # its connection closed and its readers told, rather than left to the garbage collector.
            with contextlib.suppress(Exception):  # an on_state that raises at closed: the stream ends all the same
                await self._finish("cancelled")
            raise
        except Exception as exc:  # noqa: BLE001 - whatever broke, the app learns it and the iterator ends
            # The error is kept (self.error); an on_state that raises again at closed must not escape the task,
            # where nobody awaits it ("Task exception was never retrieved").
            with contextlib.suppress(Exception):
                await self._finish(f"failed: {exc!r}", exc)

    async def _follow(self) -> None:
        attempt = 0
        wait = 0.0
        while not self._closed():
            if wait:
                await asyncio.sleep(wait)
            if self.last_event_id is not None and not is_event_id(self.last_event_id):
                # VORA refuses such a position (400), and its answer cannot be told from its other 400s (a stripped
                # upgrade) but by its text: never send it, start from the live end, and tell the app.
                await self._announce_gap(self.last_event_id)
                self.last_event_id = None
            await self._transition(State.CONNECTING)
            if self._closed():  # closed by a callback (on_state, on_resume_gap) on the way here
                return
            try:
                if self.session is None:
                    await self._set_up()
                    self._set_up_not_opened = True
                assert self.session is not None
                before = self._transport.name
                connection = await self._transport.open(
                    self.session.web_socket_token, self._open_position(), self._open_timeout
                )
            except _SessionOver:
                await self._finish(self._session_over_reason or "session over")
                return
            except _EndedBeforeSubscription as ended:
                await _call(self._on_error, ended.cause)
                attempt += 1
                wait = self._policy.refused_wait(attempt, None)
                reason = "session ended before its subscription"
                await self._transition(State.RECONNECTING, reason=reason, code=404, wait=wait)
                continue
            except AccessTokenProviderFailed as exc:
                # The app's provider said the user must log in again (AccessTokenRefused): stop. Anything else it
                # raised, or its time limit, is a refused attempt (rule 9): its OAuth server may be out of reach for
                # a moment, as for a phone waking on a new network, and the stream must outlive that.
                await _call(self._on_error, exc)
                if exc.refused:
                    await self._finish("unauthorized", exc)
                    return
                self.session = None  # the setup (or its subscription) did not finish: the next attempt finishes it
                attempt += 1
                wait = self._policy.refused_wait(attempt, None)
                await self._transition(State.RECONNECTING, reason=exc.message, wait=wait)
                continue
            except Unauthorized as exc:
                if self.session is None or self.client is None:
                    # Setup refused the access token even after the client refreshed it: the user must log in again.
                    # The reason the TypeScript SDK gives; the refusal itself is stream.error.
                    await self._finish("unauthorized", exc)
                    return
                if self._set_up_not_opened and self._replaced_too_often():  # see DEFAULT_MAX_REPLACED_SETUPS
                    await self._finish("replaced")
                    return
                self._session_over_reason = "session over (the stream's token was refused)"
                self.session = None  # the session ended while no stream was open: set up again
                attempt += 1
                wait = self._policy.refused_wait(attempt, None)  # a refused handshake (docs/clients.md rule 9)
                await self._transition(State.RECONNECTING, reason="session over", code=401, wait=wait)
                continue
            except (ServiceUnavailable, TooManyRequests, ConnectionFailed) as exc:
                if isinstance(exc, ProxyAuthenticationRequired):
                    # Retried as a failed connect (the proxy's authentication backend may be down for a moment),
                    # and told to the app, since only its proxy setting can fix wrong credentials.
                    await _call(self._on_error, exc)
                attempt += 1
                wait = self._policy.refused_wait(attempt, exc.retry_after)
                await self._transition(State.RECONNECTING, reason=str(exc), code=exc.status, wait=wait)
                continue
            except VoraError as exc:
                if exc.status < 500:  # 400, 403, 404, 409...: no retry can help (docs/clients.md rule 9)
                    await self._finish(f"refused: {exc}", exc)
                    return
                # Any 5xx (a proxy's 502 or 504 while VORA restarts behind it, VORA's 500): retried by rule 9, as
                # 503 is and as the TypeScript SDK does; it used to close the stream for good.
                attempt += 1
                wait = self._policy.refused_wait(attempt, exc.retry_after)
                await self._transition(State.RECONNECTING, reason=str(exc), code=exc.status, wait=wait)
                continue
            if self._closed():  # closed while the setup or the open was under way (from the token provider)
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(CLOSE_TIMEOUT):
                        await connection.close()
                return
            self._connection = connection
            self._set_up_not_opened = False
            opened = time.monotonic()
            fell_back = isinstance(self._transport, AutoTransport) and self._transport.name != before
            if fell_back and isinstance(self._transport, AutoTransport) and self._transport.fallback is not None:
                await _call(self._on_fallback, self._transport.fallback)  # before the open, as in the TypeScript SDK
            await self._transition(State.OPEN, reason=f"fell back to {self._transport.name}" if fell_back else "")
            if self._closed():  # closed by on_fallback or on_state; _finish closed the connection
                self._connection = None
                return
            code, reason = await self._read(connection)
            self._connection = None
            if self._closed():  # the app closed the stream while it was reading
                return
            stable = time.monotonic() - opened >= self._policy.stable_after
            attempt = 0 if stable else attempt + 1
            if reason == "replaced" and self._replaced_too_often():
                await self._finish("replaced")
                return
            next_step = after_termination(reason) if reason else after_close(code)
            if next_step is Next.STOP:
                await self._finish(reason or f"closed with {code}")
                return
            if next_step is Next.SET_UP_AGAIN:
                self._session_over_reason = reason or f"session over (closed with {code})"
                self.session = None
                if self.client is None:  # nothing to set up with: the stream ends with its session
                    await self._finish(self._session_over_reason)
                    return
            wait = (
                self._policy.first_wait(code, self._reconnect_window)
                if stable or attempt <= 1
                else self._policy.refused_wait(attempt, None)
            )
            await self._transition(State.RECONNECTING, reason=reason, code=code, wait=wait)

    def _open_position(self) -> str | None:
        """Return the lastEventId to open with: the stream's own, else where setup said its first connection starts.

        Without a position of its own (no channelOpened read yet), a first connection dropped before its
        channelOpened was read then resumes from setup instead of starting live.
        """
        start = self.session.last_event_id if self.session is not None else None
        if self.last_event_id is None and start is not None and is_event_id(start):
            return start
        return self.last_event_id

    def _replaced_too_often(self) -> bool:
        """Record a replaced and tell whether the setups it allows within the window are used up."""
        now = time.monotonic()
        self._replaced_at = [at for at in self._replaced_at if now - at < self._replaced_window]
        self._replaced_at.append(now)
        return len(self._replaced_at) > self._max_replaced_setups

    async def _receive(self, connection: Connection) -> str | None:
        """Return the next message, or None once the connection is dead: silent past the deadline by either clock.

        The loop's clock (monotonic) stops while the machine suspends, on Linux and others, and the wall clock does
        not: after a wake, a deadline armed before the sleep would need its whole length of awake time, and a link
        that died meanwhile (a NAT entry gone) was noticed up to a minute late. So the wait is cut into
        policy.wake_check slices, and each compares the wall clock with the last frame's time. The receive itself
        goes on across the slices (a task): cancelling a read midway may lose what it had read (an SSE chunk).
        """
        loop = asyncio.get_running_loop()
        started, started_wall = loop.time(), self._policy.wall_clock()
        receiving = asyncio.ensure_future(connection.receive())
        try:
            while True:
                left = started + self._heartbeat_timeout - loop.time()
                if left <= 0 or self._policy.wall_clock() - started_wall > self._heartbeat_timeout:
                    return None
                done, _ = await asyncio.wait({receiving}, timeout=min(left, self._policy.wake_check))
                if done:
                    return receiving.result()  # raises Closed when the connection ended
        finally:
            if not receiving.done():
                # Closing, or dead: what it still brings is not wanted (and its error not to be logged as unread).
                receiving.add_done_callback(lambda task: task.cancelled() or task.exception())
                receiving.cancel()
                await asyncio.wait({receiving})
            elif not receiving.cancelled():
                # It ended (close() closes the connection under it: Closed) while this waited for something else:
                # taken here, or asyncio logs 'Task exception was never retrieved' at every close.
                receiving.exception()

    async def _read(self, connection: Connection) -> tuple[int, str]:
        """Deliver messages until the connection ends; return its close code and channelTerminated reason."""
        reason = ""
        while True:
            try:
                message = await self._receive(connection)
            except Closed as closed:
                return closed.code, reason
            if message is None:
                # No heartbeat for too long: the path is dead even if TCP has not noticed (the WebSocket transport
                # aborts it after 1 s without the peer's close frame; websockets' own 10 s delayed the reconnect).
                with contextlib.suppress(Exception):
                    await connection.close()
                return ABNORMAL_CLOSURE, reason
            try:
                envelope = _envelope(message)
            except MalformedFrame as exc:
                # Skipped, as in the TypeScript SDK: one bad frame (a middlebox's doing) must not end the stream.
                await _call(self._on_error, exc)
                continue
            kind = envelope.get("type")
            if kind == "heartbeat":
                self._announced(envelope.get("data"), "intervalSeconds")
                continue
            if kind == "channelOpened":
                self._announced(envelope.get("data"), "heartbeatIntervalSeconds")
                await self._opened_at(envelope.get("data", {}).get("lastEventId"))
                continue
            if kind == "channelTerminated":
                reason = str(envelope.get("data", {}).get("reason", ""))
                await self._deliver(envelope)
                continue
            if kind == "resumeGap":
                await _call(self._on_resume_gap, envelope)
                await self._deliver(envelope)
                continue
            event_id = envelope.get("eventId")
            if not isinstance(event_id, str):
                # Stream events carry an eventId, lifecycle and control messages a null one: one of a type this
                # SDK does not know comes from a newer server, and is ignored (never an error, never the app's).
                continue
            if not is_event_id(event_id):
                await _call(self._on_error, MalformedFrame(message, "an event without a valid eventId"))
                continue
            if self.last_event_id is not None and event_position(event_id) <= event_position(self.last_event_id):
                continue  # delivered before a drop: each event reaches the app once
            self.last_event_id = event_id
            if self._on_position is not None:
                await _call(self._on_position, event_id)
            await self._deliver(envelope)

    def _announced(self, data: object, interval_field: str) -> None:
        """Keep the reconnect window and heartbeat interval a channelOpened or heartbeat announced (the latest wins)."""
        if not isinstance(data, dict):
            return
        window = _seconds(data.get("reconnectWindowSeconds"))
        if window is not None:
            self._reconnect_window = window
        interval = _seconds(data.get(interval_field))
        if interval is not None and not self._heartbeat_fixed:
            self._heartbeat_timeout = interval * 2 + HEARTBEAT_GRACE

    async def _opened_at(self, position: object) -> None:
        """Take the position a connection starts after as the last eventId, so a drop before any event resumes there.

        Nothing newer can have arrived on this connection yet, and the server's word wins over the id
        the stream sent: after resumeGap `ahead` it is earlier, and keeping the sent one would drop events.
        """
        if not isinstance(position, str) or not is_event_id(position) or position == self.last_event_id:
            return
        self.last_event_id = position
        if self._on_position is not None:
            await _call(self._on_position, position)

    async def _announce_gap(self, position: str) -> None:
        """Tell the app (a local resumeGap, as the TypeScript SDK's) that the stream starts live, not after position."""
        notice: Envelope = {
            "eventId": None,
            "sequenceNumber": None,
            "identity": self.identity,
            "type": "resumeGap",
            "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "data": {
                "reason": "invalidLastEventId",
                "requestedEventId": position,
                "oldestEventId": None,
                "local": True,
            },
        }
        await _call(self._on_resume_gap, notice)
        await self._deliver(notice)

    async def _deliver(self, envelope: Envelope) -> None:
        await _call(self._on_event, envelope)
        if self._read_by_app:
            await self._queue.put(envelope)


async def connect(
    client: VoraClient,
    identity: str,
    **options: Any,
) -> EventStream:
    """Set up a session on identity (or use options' session), subscribe, and start its event stream."""
    return await EventStream(client, identity, **options).start()
