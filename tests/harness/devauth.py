"""Run the development authorization server (devauth/server.js, oidc-provider) on a loopback port."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Self

import requests

from testbed.ports import HOST, free_port
from testbed.procs import Harnessed, ManagedProcess
from testbed.wait import wait_for

DEVAUTH_DIR = Path(__file__).resolve().parents[2] / "devauth"


class DevAuthUnavailable(RuntimeError):
    """Node or the provider's npm packages are missing (make install installs them)."""


def node_binary() -> str:
    """Return the node binary, or raise DevAuthUnavailable saying how to get the provider."""
    node = shutil.which("node")
    if node is None or not (DEVAUTH_DIR / "node_modules" / "oidc-provider").is_dir():
        raise DevAuthUnavailable("the dev authorization server needs node and `make install` (npm ci in devauth/)")
    return node


def write_signing_key(path: Path) -> str:
    """Replace the provider's private JWKS at path with one new ES256 key and return its kid."""
    subprocess.run(
        [node_binary(), str(DEVAUTH_DIR / "keys.js"), str(path)], check=True, capture_output=True, timeout=30
    )
    kid: str = json.loads(path.read_text())["keys"][0]["kid"]
    return kid


class DevAuth(Harnessed):
    """One devauth provider with its users, clients and signing key, reachable at its loopback issuer URL."""

    def __init__(
        self,
        *,
        audience: str,
        users: Mapping[str, str],
        web_redirect_uris: Sequence[str] = (),
        service_clients: Mapping[str, str] | None = None,
        port: int | None = None,
        workdir: Path | None = None,
        access_token_ttl: int = 600,
        startup_timeout: float = 20.0,
    ) -> None:
        self.port = port or free_port()
        self.audience = audience
        self.users = dict(users)
        self.web_redirect_uris = list(web_redirect_uris)
        self.service_clients = dict(service_clients or {})
        self.access_token_ttl = access_token_ttl
        self.startup_timeout = startup_timeout
        self._owns_workdir = workdir is None
        self.workdir = workdir if workdir is not None else Path(tempfile.mkdtemp(prefix="vora-devauth-"))
        self.jwks_file = self.workdir / "devauth-jwks.json"
        self.kid = ""
        self._proc: ManagedProcess | None = None

    @property
    def issuer(self) -> str:
        """Return the issuer URL, which is also the base of every endpoint."""
        return f"http://{HOST}:{self.port}"

    @property
    def jwks_url(self) -> str:
        """Return the public JWKS URL VORA is configured with."""
        return f"{self.issuer}/jwks"

    def discovery(self) -> dict[str, Any]:
        """Return the provider's OpenID discovery document."""
        response = requests.get(f"{self.issuer}/.well-known/openid-configuration", timeout=5)
        response.raise_for_status()
        document: dict[str, Any] = response.json()
        return document

    def _env(self) -> dict[str, str]:
        return {
            **os.environ,
            "DEVAUTH_HOST": HOST,
            "DEVAUTH_PORT": str(self.port),
            "DEVAUTH_JWKS_FILE": str(self.jwks_file),
            "DEVAUTH_AUDIENCE": self.audience,
            "DEVAUTH_USERS": ",".join(f"{name}:{password}" for name, password in self.users.items()),
            "DEVAUTH_WEB_REDIRECT_URIS": ",".join(self.web_redirect_uris),
            "DEVAUTH_SERVICE_CLIENTS": ",".join(f"{name}:{secret}" for name, secret in self.service_clients.items()),
            "DEVAUTH_ACCESS_TOKEN_TTL": str(self.access_token_ttl),
        }

    def start(self) -> Self:
        """Start the provider (with a new signing key unless it has one) and wait for its discovery document."""
        node = node_binary()
        if not self.jwks_file.exists():
            self.kid = write_signing_key(self.jwks_file)
        self._proc = ManagedProcess(
            [node, str(DEVAUTH_DIR / "server.js")],
            cwd=DEVAUTH_DIR,
            log_path=self.workdir / f"devauth-{self.port}.log",
            env=self._env(),
            name="devauth",
        )
        self._proc.start()
        wait_for(
            lambda: self.discovery().get("issuer") == self.issuer,
            self.startup_timeout,
            what="the devauth discovery document",
            abort=self._proc.exit_reason,
        )
        return self

    def rotate_key(self) -> str:
        """Restart the provider on the same port with a new signing key, the old one removed; return the new kid."""
        self.stop()
        self.kid = write_signing_key(self.jwks_file)
        self.start()
        return self.kid

    def stop(self) -> None:
        """Stop the provider process, keeping its key and work directory."""
        if self._proc is not None:
            self._proc.stop()
            self._proc = None

    def log_tail(self) -> str:
        """Return the end of the provider's log."""
        return self._proc.log_tail() if self._proc is not None else "(not running)"

    def close(self) -> None:
        """Stop the provider and remove the work directory the harness made."""
        self.stop()
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
