"""What every scenario shares: the processes, Redis, the signing key, tokens, REST calls and publishers."""

from __future__ import annotations

import contextlib
import http.client
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from bench.procs import Launcher, Server, start_baseline, start_vora
from testbed.redis_procs import RedisServer
from vora.auth.devkeys import create_dev_key, mint_token
from vora.core.settings import Settings
from vora.services import build_stores

WORKERS = 2
STOP_TIMEOUT = 10.0  # SIGKILL after this; VORA_GRACEFUL_TIMEOUT is 3 s here
# The socket scenarios hold up to 20,000 sockets on 100 sessions; the default cap (10 a session) would refuse most.
SOCKETS_PER_SESSION = 200
DEFAULTS = Settings()
# Setup limits so high they never refuse, yet the limiter still runs inside setup's script: the
# benchmarks measure what setup costs with it, not how it turns a load generator away.
UNREFUSING_SETUP_RATE = {
    "VORA_SETUP_RATE_PER_USER": "1000000000",
    "VORA_SETUP_RATE_PER_IDENTITY": "1000000000",
    "VORA_SETUP_RATE_WINDOW": "86400",
}


class Rest:
    """A keep-alive HTTP/1.1 client for one server, with an optional access token."""

    def __init__(self, server: Server, token: str | None = None) -> None:
        self._connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        """Send one request under /vora and return its status and decoded JSON body (None when empty)."""
        headers = dict(self._headers)
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        self._connection.request(method, f"/vora{path}", body=payload, headers=headers)
        response = self._connection.getresponse()
        raw = response.read()
        return response.status, json.loads(raw) if raw else None

    def close(self) -> None:
        """Close the connection."""
        self._connection.close()


@dataclass
class Bench:
    """The running benchmark: its children, its Redis, its key, its options and its deadline."""

    procs: Launcher
    redis_server: RedisServer
    workdir: Path
    wrk: str | None
    quick: bool
    deadline: float
    profile_dir: Path | None = None
    notes: list[str] = field(default_factory=list)
    extra_env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.dev_key = self.workdir / "dev-key.pem"
        create_dev_key(self.dev_key)
        self.pem = self.dev_key.read_bytes()
        # The benchmark's own stores come from VORA's composition root, as the CLI's do.
        stores = build_stores(DEFAULTS.with_changes(redis_url=self.redis_server.url, redis_timeout=10.0))
        self.redis = stores.client
        self.directory = stores.directory
        self.publisher = stores.publisher

    def remaining(self) -> float:
        """Return the seconds left before the benchmark's deadline."""
        return self.deadline - time.monotonic()

    def seconds(self, full: float, quick: float) -> float:
        """Pick a duration by mode."""
        return quick if self.quick else full

    def vora_env(self) -> dict[str, str]:
        """Return the VORA_* variables of a benchmark server (defaults otherwise)."""
        return {
            "VORA_REDIS_URL": self.redis_server.url,
            "VORA_DEV_KEY": str(self.dev_key),
            "VORA_GRACEFUL_TIMEOUT": "3",
            "VORA_WS_MAX_SOCKETS_PER_SESSION": str(SOCKETS_PER_SESSION),
            **UNREFUSING_SETUP_RATE,
            **self.extra_env,
        }

    def token(self, subject: str) -> str:
        """Mint an access token with every VORA scope for a subject (default issuer and audience)."""
        return mint_token(self.pem, subject, DEFAULTS.oauth_issuer, DEFAULTS.oauth_audience, lifetime=3600)

    def provision(self, subject: str, identities: list[str]) -> None:
        """Give a user identities in the directory."""
        self.directory.add(subject, identities)

    def open_sessions(self, server: Server, subject: str, identities: list[str], per_identity: int) -> list[str]:
        """Provision a user, open per_identity sessions on each identity, subscribe them to all; return tokens."""
        self.provision(subject, identities)
        rest = Rest(server, self.token(subject))
        tokens = []
        try:
            for identity in identities:
                for _ in range(per_identity):
                    status, body = rest.call(
                        "POST", "/identity/setup", {"connectionType": "WebSocket", "identity": identity}
                    )
                    if status != 200:
                        raise RuntimeError(f"setup answered {status}: {body}")
                    tokens.append(body["webSocketToken"])
                status, body = rest.call("POST", f"/identity/{identity}/eventSubscription", {"subscribeAll": True})
                if status != 200:
                    raise RuntimeError(f"eventSubscription answered {status}: {body}")
        finally:
            rest.close()
        return tokens

    @contextlib.contextmanager
    def vora_server(self, workers: int = WORKERS, /, **env: str) -> Iterator[Server]:
        """Run a fresh VORA with workers gevent workers for one scenario, with extra VORA_* variables."""
        vora = start_vora(self.procs, {**self.vora_env(), **env}, workers)
        try:
            yield vora
        finally:
            vora.process.stop(STOP_TIMEOUT)

    @contextlib.contextmanager
    def servers(
        self, baseline_identities: list[str] | None = None, workers: int = WORKERS
    ) -> Iterator[tuple[Server, Server]]:
        """Run a fresh VORA and a fresh baseline app, workers gevent workers each, for one scenario."""
        vora = start_vora(self.procs, self.vora_env(), workers)
        try:
            env = {
                "BENCH_REDIS_URL": self.redis_server.url,
                "BENCH_IDENTITIES": ",".join(baseline_identities or []),
                "VORA_GRACEFUL_TIMEOUT": "3",
                "VORA_WS_MAX_SOCKETS_PER_SESSION": str(SOCKETS_PER_SESSION),
            }
            baseline = start_baseline(self.procs, env, workers)
            try:
                yield vora, baseline
            finally:
                baseline.process.stop(STOP_TIMEOUT)
        finally:
            vora.process.stop(STOP_TIMEOUT)

    def redis_info(self, section: str) -> dict[str, Any]:
        """Return one INFO section of the benchmark's Redis."""
        return cast(dict[str, Any], self.redis.info(section))

    def redis_cpu_seconds(self) -> float:
        """Return the user+system CPU seconds the benchmark's Redis has used so far."""
        info = self.redis_info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def identities(prefix: str, count: int) -> list[str]:
    """Make count phone-number identities that start with a scenario's prefix."""
    return [f"{prefix}{n:05d}" for n in range(count)]
