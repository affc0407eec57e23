"""Send signed JSON webhooks (push gateway, readiness callback) with a timeout and bounded, jittered retries.

Every request carries `X-Vora-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`
so the receiver can check that VORA sent it and reject replays (docs/mobile-push.md).
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import logging
import random
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from vora.core.deadline import opener_with_deadlines, within

log = logging.getLogger("vora.webhooks")

SIGNATURE_HEADER = "X-Vora-Signature"
EVENT_HEADER = "X-Vora-Event"
DELIVERY_HEADER = "X-Vora-Delivery"
SIGNATURE_TOLERANCE_S = 300
MAX_BACKOFF_S = 30.0
USER_AGENT = "vora-webhooks/0.2"


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """Return the signature header value for a body sent at timestamp (unix seconds)."""
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(secret: str, header: str, body: bytes, now: float, tolerance_s: int = SIGNATURE_TOLERANCE_S) -> bool:
    """Tell whether a signature header is VORA's for this body and was made within tolerance_s of now."""
    parts = dict(item.partition("=")[::2] for item in header.split(","))
    try:
        timestamp = int(parts.get("t", ""))
    except ValueError:
        return False
    if abs(now - timestamp) > tolerance_s:
        return False
    expected = sign(secret, timestamp, body).partition(",v1=")[2]
    return hmac.compare_digest(expected, parts.get("v1", ""))


@dataclass(frozen=True)
class Delivery:
    """How a webhook went: delivered or not, after how many attempts, and the last problem."""

    delivered: bool
    attempts: int
    problem: str | None = None


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    """Treat a redirect as a refusal: a signed body goes only to the configured URL."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        """Follow no redirect."""
        return None


# Honours the usual *_proxy variables (operators may need a proxy to reach a gateway), follows no redirect,
# and opens connections an attempt's deadline can cut.
_OPENER = opener_with_deadlines(_RefuseRedirects())


def _retryable(status: int) -> bool:
    return status in {408, 425, 429} or status >= 500


class WebhookSender:
    """POST signed JSON bodies, retrying timeouts, refused connections, non-HTTP answers, 408/429, 5xx with backoff."""

    def __init__(
        self,
        timeout: float,
        max_attempts: int,
        backoff: float,
        on_retry: Callable[[], None] = lambda: None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._timeout = timeout
        self._max_attempts = max_attempts
        self._backoff = backoff
        self._on_retry = on_retry
        self._sleep = sleep

    def _backoff_ceiling(self, attempt: int) -> float:
        return min(MAX_BACKOFF_S, self._backoff * 2.0 ** (attempt - 1))

    def backoff_delay(self, attempt: int) -> float:
        """Return how long to wait after a failed attempt (1-based): exponential, half of it random."""
        ceiling = self._backoff_ceiling(attempt)
        return ceiling / 2 + random.uniform(0, ceiling / 2)  # noqa: S311 - jitter, not cryptography

    def longest_pause_seconds(self) -> float:
        """Return the longest time between two before_attempt calls: one attempt timing out and the longest wait."""
        return self._timeout + self._backoff_ceiling(max(1, self._max_attempts - 1))

    def deliver(
        self,
        url: str,
        secret: str,
        event: str,
        delivery_id: str,
        payload: dict[str, Any],
        before_attempt: Callable[[], bool] = lambda: True,
    ) -> Delivery:
        """POST payload to url until a 2xx, a permanent refusal, or the last attempt.

        before_attempt runs before each attempt; returning False abandons the delivery.
        """
        body = json.dumps(payload, separators=(",", ":")).encode()
        problem: str | None = None
        for attempt in range(1, self._max_attempts + 1):
            if attempt > 1:
                self._on_retry()
                self._sleep(self.backoff_delay(attempt - 1))
            if not before_attempt():
                return Delivery(False, attempt - 1, "abandoned")
            request = urllib.request.Request(  # noqa: S310 - the URL scheme is checked by Settings
                url,
                data=body,
                method="POST",
                headers={
                    "Content-Type": "application/json",
                    "User-Agent": USER_AGENT,
                    SIGNATURE_HEADER: sign(secret, int(time.time()), body),
                    EVENT_HEADER: event,
                    DELIVERY_HEADER: delivery_id,
                },
            )
            with within(self._timeout) as deadline:
                try:
                    with _OPENER.open(request, timeout=self._timeout) as response:
                        response.read(1024)
                    problem = None
                except urllib.error.HTTPError as exc:
                    problem = f"HTTP {exc.code}"
                    if not _retryable(exc.code):
                        break
                except (urllib.error.URLError, OSError) as exc:  # refused, reset, timed out, TLS
                    reason = getattr(exc, "reason", exc)
                    problem = type(reason).__name__ if isinstance(reason, BaseException) else str(reason)
                except http.client.HTTPException as exc:  # an answer that is not HTTP, or cut off: BadStatusLine, ...
                    problem = type(exc).__name__
            if deadline.passed:
                problem = "TimeoutError"  # cut at the deadline: whatever the reading made of the cut answer
            elif problem is None:
                return Delivery(True, attempt)
            log.info(
                "webhook attempt failed",
                extra={"fields": {"event": event, "delivery": delivery_id, "attempt": attempt, "problem": problem}},
            )
        return Delivery(False, min(attempt, self._max_attempts), problem)
