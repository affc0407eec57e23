"""`vora listen`: print a session's events, on the Python SDK's stream (it resumes across drops, each event once)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from vora_client import EventStream, Session, State, StateChange, VoraError


class ListenError(RuntimeError):
    """The stream could not be opened, or ended on a refusal."""


async def _listen(
    url: str,
    token: str,
    last_event_id: str | None,
    count: int | None,
    timeout: float | None,
    on_open: Callable[[], None] | None,
    emit: Callable[[dict[str, Any]], None],
) -> None:
    def announce(change: StateChange) -> None:
        if change.current is State.OPEN and on_open is not None:
            on_open()

    # The WebSocket URL given, and only it: an operator testing a path must not be moved to another one.
    stream = EventStream(
        None,
        "",
        session=Session("", token),
        last_event_id=last_event_id,
        ws_url=url,
        transport="websocket",
        on_state=announce,
    )
    await stream.start()
    received = 0
    try:
        while count is None or received < count:
            try:
                # asyncio.timeout, not wait_for: Python 3.11's wait_for drops a Ctrl-C's cancellation that
                # meets a just-arrived event, and listen would read on.
                async with asyncio.timeout(timeout):
                    envelope = await stream.__anext__()
            except (TimeoutError, StopAsyncIteration):
                break
            received += 1
            emit(envelope)
    finally:
        await stream.close()
    if isinstance(stream.error, VoraError) and received == 0:
        error = stream.error
        raise ListenError(f"refused with HTTP {error.status}: {error.error}: {error.message}")


def listen(
    url: str,
    token: str,
    emit: Callable[[dict[str, Any]], None],
    *,
    last_event_id: str | None = None,
    count: int | None = None,
    timeout: float | None = None,
    on_open: Callable[[], None] | None = None,
) -> None:
    """Hand each event to emit as it arrives, until the session ends, count is reached or timeout passes."""
    asyncio.run(_listen(url, token, last_event_id, count, timeout, on_open, emit))
