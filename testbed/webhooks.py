"""A real HTTP webhook receiver on loopback that checks VORA's HMAC signature and can be told to fail."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

from vora.push.webhooks import DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER, verify

HANG = "hang"  # a planned answer: hold the request open until release_hanging(), the receiver stops, or HANG_LIMIT
HANG_LIMIT = 30.0
MALFORMED = "malformed"  # a planned answer that is not HTTP: a line of text, then the connection closes
TRICKLE = "trickle"  # a planned answer: a 200 status line, then a byte of a header field every TRICKLE_PAUSE seconds
TRICKLE_PAUSE = 0.1


@dataclass(frozen=True)
class Received:
    """One request the receiver got: its webhook event, delivery id, body, and whether the signature held."""

    event: str
    delivery: str
    body: dict[str, Any]
    signed: bool
    answer: int | str


class WebhookReceiver:
    """Accept signed webhooks on 127.0.0.1; answer each with the next planned status (200 once the plan is spent)."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.attempts: list[Received] = []
        self.hanging = 0  # requests held open right now
        self._accepted: list[Received] = []
        self._plan: deque[int | str] = deque()
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._release = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="webhook-receiver", daemon=True)

    @property
    def url(self) -> str:
        """Return the URL VORA should post to."""
        return f"http://127.0.0.1:{self._server.server_address[1]}/hook"

    def plan(self, *answers: int | str) -> None:
        """Answer the next requests with these statuses (or HANG), in order."""
        with self._lock:
            self._plan.extend(answers)

    def next_accepted(self, match: Callable[[Received], bool] = lambda r: True, timeout: float = 15.0) -> Received:
        """Take the oldest request answered 2xx that matches, waiting up to timeout seconds for one."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while True:
                for index, received in enumerate(self._accepted):
                    if match(received):
                        return self._accepted.pop(index)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no matching webhook was accepted within {timeout}s")
                self._arrived.wait(remaining)

    def accepted_now(self, match: Callable[[Received], bool] = lambda r: True) -> list[Received]:
        """Take every request answered 2xx so far that matches, without waiting."""
        with self._lock:
            taken = [r for r in self._accepted if match(r)]
            self._accepted = [r for r in self._accepted if not match(r)]
            return taken

    def attempts_for(self, match: Callable[[Received], bool]) -> list[Received]:
        """Return every request received that matches, whatever it was answered."""
        with self._lock:
            return [r for r in self.attempts if match(r)]

    def release_hanging(self) -> None:
        """End every request held open by HANG, without an answer (the sender sees the connection drop)."""
        self._release.set()
        self._release.clear()

    def _answer(self) -> int | str:
        with self._lock:
            return self._plan.popleft() if self._plan else 200

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                answer = receiver._answer()
                received = Received(
                    self.headers.get(EVENT_HEADER, ""),
                    self.headers.get(DELIVERY_HEADER, ""),
                    json.loads(raw),
                    verify(receiver.secret, self.headers.get(SIGNATURE_HEADER, ""), raw, time.time()),
                    answer,
                )
                with receiver._lock:
                    receiver.attempts.append(received)
                if answer == HANG:
                    with receiver._lock:
                        receiver.hanging += 1
                    receiver._release.wait(HANG_LIMIT)
                    with receiver._lock:
                        receiver.hanging -= 1
                    return
                if answer == MALFORMED:
                    self.wfile.write(b"this is not HTTP\r\n\r\n")
                    self.close_connection = True
                    return
                if answer == TRICKLE:
                    self.trickle()
                    return
                self.send_response(int(answer))
                self.send_header("Content-Length", "0")
                self.end_headers()
                if 200 <= int(answer) < 300:
                    with receiver._arrived:
                        receiver._accepted.append(received)
                        receiver._arrived.notify_all()

            def trickle(self) -> None:
                # Each byte comes well within a socket timeout; the head never ends, until the sender goes away.
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
                    self.wfile.flush()
                    deadline = time.monotonic() + HANG_LIMIT
                    while time.monotonic() < deadline and not receiver._release.wait(TRICKLE_PAUSE):
                        self.wfile.write(b"a")
                        self.wfile.flush()

            def log_message(self, format: str, *args: Any) -> None:
                return

        return Handler

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
