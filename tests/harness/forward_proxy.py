"""Run tinyproxy as a corporate forward proxy on loopback: CONNECT to any port, absolute-form GETs, Basic auth."""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path
from typing import Self

import pytest

from testbed.ports import HOST, free_port
from testbed.procs import DEFAULT_STOP_TIMEOUT, Harnessed, ManagedProcess
from testbed.wait import port_accepts, wait_for

_SEARCH_PATH = "/usr/bin:/usr/sbin:/usr/local/bin:/usr/local/sbin"
# At LogLevel Connect tinyproxy logs each request line: "Request (file descriptor 7): CONNECT host:port HTTP/1.1".
_REQUEST = re.compile(r"Request \(file descriptor \d+\): (?P<method>[A-Z]+) (?P<target>\S+)")


def find_tinyproxy() -> str | None:
    """Return the path of the tinyproxy binary (Debian's tinyproxy package, installed by make test-tools), or None."""
    return shutil.which("tinyproxy") or shutil.which("tinyproxy", path=_SEARCH_PATH)


def tinyproxy_or_skip() -> str:
    """Return the tinyproxy binary, or skip the test when it is not installed."""
    binary = find_tinyproxy()
    if binary is None:
        pytest.skip("tinyproxy is not installed (make test-tools installs it: apt-get install tinyproxy)")
    return binary


class ForwardProxy(Harnessed):
    """One tinyproxy process: an explicit HTTP proxy that tunnels with CONNECT (to any port) and forwards plain GETs.

    With credentials it answers 407 to every request without `Proxy-Authorization: Basic` for them.
    """

    def __init__(
        self,
        *,
        binary: str,
        credentials: tuple[str, str] | None = None,
        connect_ports: tuple[int, ...] = (),
        startup_timeout: float = 10.0,
        workdir: Path | None = None,
    ) -> None:
        self.binary = binary
        self.credentials = credentials
        self.connect_ports = connect_ports  # empty: CONNECT to any port (tinyproxy's rule when none is listed)
        self.host = HOST
        self.port = free_port()
        self.startup_timeout = startup_timeout
        # A given workdir is kept (the SDK suite's log directory); a temp one goes with close().
        self._given_workdir = workdir
        if workdir is not None:
            workdir.mkdir(parents=True, exist_ok=True)
        self.prefix = workdir if workdir is not None else Path(tempfile.mkdtemp(prefix="vora-tinyproxy-"))
        self._proc: ManagedProcess | None = None

    @property
    def url(self) -> str:
        """Return the proxy URL without credentials."""
        return f"http://{self.host}:{self.port}"

    @property
    def url_with_credentials(self) -> str:
        """Return the proxy URL with its user and password (user:password@)."""
        if self.credentials is None:
            return self.url
        user, password = self.credentials
        return f"http://{user}:{password}@{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        """Return tinyproxy's log file."""
        return self.prefix / "tinyproxy.log"

    def render_config(self) -> str:
        """Return the tinyproxy.conf text for this instance."""
        lines = [
            f"Port {self.port}",
            f"Listen {self.host}",
            "Timeout 600",
            f'LogFile "{self.log_path}"',
            "LogLevel Connect",
            f'PidFile "{self.prefix / "tinyproxy.pid"}"',
            "MaxClients 200",
            f"Allow {self.host}",
            "DisableViaHeader Yes",
            *(f"ConnectPort {port}" for port in self.connect_ports),
        ]
        if self.credentials is not None:
            lines.append("BasicAuth {} {}".format(*self.credentials))
        return "\n".join(lines) + "\n"

    def start(self) -> Self:
        """Write the config, start tinyproxy in the foreground and wait until its port accepts."""
        if self._proc is not None:
            raise RuntimeError("tinyproxy is already running")
        config = self.prefix / "tinyproxy.conf"
        config.write_text(self.render_config())
        proc = ManagedProcess([self.binary, "-d", "-c", str(config)], cwd=self.prefix, log_path=self.prefix / "out.log")
        proc.start()
        self._proc = proc
        try:
            wait_for(
                lambda: port_accepts(self.port, self.host),
                self.startup_timeout,
                what=f"tinyproxy to accept on port {self.port}",
                abort=lambda: proc.exit_reason() and f"{proc.exit_reason()}\n{self.log_tail()}",
            )
        except BaseException:
            self.stop()
            raise
        return self

    def log_lines(self) -> list[str]:
        """Return tinyproxy's log lines."""
        try:
            return self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return []

    def log_tail(self, lines: int = 40) -> str:
        """Return the last lines of the log, for a failure's message."""
        return "\n".join(self.log_lines()[-lines:]) or "(no tinyproxy log)"

    def requests(self) -> list[tuple[str, str]]:
        """Return (method, target) of every request the proxy received, in order: CONNECT host:port, GET URL."""
        found = (_REQUEST.search(line) for line in self.log_lines())
        return [(match["method"], match["target"]) for match in found if match is not None]

    def tunnels_to(self, port: int) -> int:
        """Count the CONNECT requests to port on loopback."""
        return sum(1 for method, target in self.requests() if method == "CONNECT" and target == f"{self.host}:{port}")

    def forwards(self, url_prefix: str) -> int:
        """Count the forwarded (absolute-form) requests whose URL starts with url_prefix."""
        return sum(1 for method, target in self.requests() if method != "CONNECT" and target.startswith(url_prefix))

    def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT) -> None:
        """Stop tinyproxy (the prefix and its log are kept until close)."""
        if self._proc is not None:
            self._proc.stop(timeout)
            self._proc = None

    def close(self) -> None:
        """Stop tinyproxy and remove its prefix unless it was given."""
        self.stop()
        if self._given_workdir is None:
            shutil.rmtree(self.prefix, ignore_errors=True)
