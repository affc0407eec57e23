"""VORA servers for the Python SDK's tests."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from testbed.vora_server import RunningServer

IDENTITY = "910111000"


SERVER_KEY = "sdk-test-server-key-0123456789abcdefghijklmnop"


ServerFactory = Callable[..., contextlib.AbstractContextManager[RunningServer]]
