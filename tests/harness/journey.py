"""The client's journey against real processes: REST calls as a user, probes, provisioning and server settings."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from testbed.vora_server import RunningServer
from tests.harness import wait_for
from tests.harness.tokens import AUDIENCE, ISSUER
from tests.harness.ws_client import Client
from vora.events.publisher import PublishedEvent

REQUEST_TIMEOUT = 10.0
ERROR_FIELDS = {"timestamp", "status", "error", "message"}


@dataclass(frozen=True)
class Entry:
    """Where a client reaches VORA: one server, or nginx in front of several."""

    base_url: str
    ws_url: str

    @classmethod
    def of(cls, server: RunningServer) -> Entry:
        """Reach one server directly."""
        return cls(server.base_url, server.ws_url)

    @classmethod
    def at_port(cls, port: int) -> Entry:
        """Reach whatever listens on a loopback port (nginx)."""
        return cls(f"http://127.0.0.1:{port}/vora", f"ws://127.0.0.1:{port}/vora/ws")


class Api:
    """Call VORA's REST API as one user with one access token."""

    def __init__(self, entry: Entry, access_token: str) -> None:
        self.entry = entry
        self._headers = {"Authorization": f"Bearer {access_token}"}

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> requests.Response:
        return requests.request(
            method, self.entry.base_url + path, json=body, headers=self._headers, timeout=REQUEST_TIMEOUT
        )

    def identities(self) -> requests.Response:
        """GET /identity."""
        return self._call("GET", "/identity")

    def try_setup(self, identity: str) -> requests.Response:
        """POST /identity/setup for a WebSocket session on an identity."""
        return self._call("POST", "/identity/setup", {"connectionType": "WebSocket", "identity": identity})

    def setup(self, identity: str) -> str:
        """Open a session on an identity and return its WebSocket token."""
        response = self.try_setup(identity)
        assert response.status_code == 200, response.text
        token: str = response.json()["webSocketToken"]
        return token

    def try_subscribe(self, identity: str, events: list[str] | None = None) -> requests.Response:
        """POST /identity/{identity}/eventSubscription: some events, or all of them (None)."""
        body: dict[str, Any] = {"subscribeAll": True} if events is None else {"subscribeAll": False, "events": events}
        return self._call("POST", f"/identity/{identity}/eventSubscription", body)

    def subscribe(self, identity: str, events: list[str] | None = None) -> None:
        """Subscribe the user's sessions on an identity to some events (None: all of them)."""
        response = self.try_subscribe(identity, events)
        assert response.status_code == 200, response.text

    def try_logout(self, identity: str) -> requests.Response:
        """POST /logout/{identity}."""
        return self._call("POST", f"/logout/{identity}")

    def logout(self, identity: str) -> None:
        """End the user's sessions on an identity."""
        response = self.try_logout(identity)
        assert response.status_code == 200, response.text


def assert_delivered(client: Client, published: list[PublishedEvent]) -> None:
    """Check that the socket's next events are exactly these, in order, with their envelopes."""
    assert client.events(len(published)) == [p.envelope for p in published]


def readiness(entry: Entry) -> int:
    """Return the status of the readiness probe."""
    return requests.get(f"{entry.base_url}/health/readiness", timeout=REQUEST_TIMEOUT).status_code


def wait_ready(entry: Entry, timeout: float) -> None:
    """Wait until the readiness probe answers 204."""
    wait_for(lambda: readiness(entry) == 204, timeout, what=f"readiness of {entry.base_url} to answer 204")


def assert_unavailable(response: requests.Response) -> None:
    """Check a 503 that says the session store is unavailable, in the VORA error shape, with Retry-After."""
    assert response.status_code == 503, response.text
    body = response.json()
    assert set(body) == ERROR_FIELDS, body
    assert body["status"] == "503"
    assert body["error"] == "Service Unavailable"
    assert response.headers.get("Retry-After", "").isdigit(), response.headers


def vora_env(redis_url: str, key_dir: Path, **overrides: str) -> dict[str, str]:
    """Return the VORA_* variables of a server on redis_url that trusts the tests' dev key."""
    env = {
        "VORA_REDIS_URL": redis_url,
        "VORA_DEV_KEY": str(key_dir / "dev-key.pem"),
        "VORA_OAUTH_ISSUER": ISSUER,
        "VORA_OAUTH_AUDIENCE": AUDIENCE,
        "VORA_GRACEFUL_TIMEOUT": "5",
    }
    env.update({f"VORA_{name.upper()}": value for name, value in overrides.items()})
    return env


def vora_cli(env: dict[str, str], *args: str) -> str:
    """Run the vora command line with these variables and return what it printed."""
    result = subprocess.run(
        [sys.executable, "-m", "vora.cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


# What a server logs when something went wrong that no Redis outage excuses.
UNEXPECTED = ('"unhandled error"', "Traceback (most recent call last)")
# What it logs when it lost Redis.
REDIS_TROUBLE = ("hub lost its subscription", "lease renewal failed", "redis unavailable")


def assert_no_server_errors(server: RunningServer, redis_was_lost: bool = False) -> None:
    """Check the server's log for unhandled errors and, unless Redis was lost on purpose, for Redis trouble."""
    log = server.log()
    # A gevent worker that exits may print this about logging's lock; it is not VORA's error.
    log = log.replace("Exception ignored in: <function _removeHandlerRef", "")
    for marker in UNEXPECTED + (() if redis_was_lost else REDIS_TROUBLE):
        assert marker not in log, f"{marker} in the server log:\n{log[-3000:]}"
