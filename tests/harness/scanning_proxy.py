"""Run Privoxy as a scanning gateway on loopback: a forward proxy that holds each response's first kilobytes.

A content filter on every URL makes Privoxy read a text/* response into its buffer before it sends
anything, head included. When the buffer passes `buffer-limit`, Privoxy sends what it holds and
passes the rest on as it arrives ("Stepping back from filtering"), as antivirus and DLP gateways
that scan a response's first bytes do. The filter itself matches nothing VORA sends.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Self

import pytest

from testbed.ports import HOST, free_port
from testbed.procs import DEFAULT_STOP_TIMEOUT, Harnessed, ManagedProcess
from testbed.wait import port_accepts, wait_for

_SEARCH_PATH = "/usr/bin:/usr/sbin:/usr/local/bin:/usr/local/sbin"
# One filter on every URL: Privoxy reads each text/* body into its buffer to apply it (it matches nothing VORA sends).
_FILTER = "FILTER: scan Read every text body (matches nothing)\ns/@@never@@/x/\n"
STEPPED_BACK = "Stepping back from filtering"  # Privoxy's log line when the held bytes passed the limit


def find_privoxy() -> str | None:
    """Return the path of the privoxy binary (Debian's privoxy package, installed by make test-tools), or None."""
    return shutil.which("privoxy") or shutil.which("privoxy", path=_SEARCH_PATH)


def privoxy_or_skip() -> str:
    """Return the privoxy binary, or skip the test when it is not installed."""
    binary = find_privoxy()
    if binary is None:
        pytest.skip("privoxy is not installed (make test-tools installs it: apt-get install privoxy)")
    return binary


class ScanningProxy(Harnessed):
    """One Privoxy process that holds the first hold_kib KiB of every text/* response (head included)."""

    def __init__(self, *, binary: str, hold_kib: int = 8, startup_timeout: float = 10.0) -> None:
        self.binary = binary
        self.hold_kib = hold_kib
        self.host = HOST
        self.port = free_port()
        self.startup_timeout = startup_timeout
        self.prefix = Path(tempfile.mkdtemp(prefix="vora-privoxy-"))
        self._proc: ManagedProcess | None = None

    @property
    def url(self) -> str:
        """Return the proxy URL."""
        return f"http://{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        """Return Privoxy's log (its standard error: in the foreground it logs there)."""
        return self.prefix / "privoxy.log"

    def render_config(self) -> str:
        """Return the Privoxy config text for this instance."""
        return "\n".join(
            [
                f"listen-address {self.host}:{self.port}",
                f"confdir {self.prefix}",
                f"actionsfile {self.prefix / 'scan.action'}",
                f"filterfile {self.prefix / 'scan.filter'}",
                f"buffer-limit {self.hold_kib}",
                "toggle 1",
                "enable-remote-toggle 0",
                "enable-edit-actions 0",
                "debug 1",  # each request
                "debug 4096",  # startup and the buffer limit
                "",
            ]
        )

    def start(self) -> Self:
        """Write the config, filter and actions, start Privoxy in the foreground and wait until its port accepts."""
        if self._proc is not None:
            raise RuntimeError("privoxy is already running")
        (self.prefix / "scan.filter").write_text(_FILTER)
        (self.prefix / "scan.action").write_text("{+filter{scan}}\n/\n")
        config = self.prefix / "config"
        config.write_text(self.render_config())
        proc = ManagedProcess([self.binary, "--no-daemon", str(config)], cwd=self.prefix, log_path=self.log_path)
        proc.start()
        self._proc = proc
        try:
            wait_for(
                lambda: port_accepts(self.port, self.host),
                self.startup_timeout,
                what=f"privoxy to accept on port {self.port}",
                abort=lambda: proc.exit_reason() and f"{proc.exit_reason()}\n{self.log_tail()}",
            )
        except BaseException:
            self.stop()
            raise
        return self

    def log_lines(self) -> list[str]:
        """Return Privoxy's log lines."""
        try:
            return self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return []

    def log_tail(self, lines: int = 40) -> str:
        """Return the last lines of the log, for a failure's message."""
        return "\n".join(self.log_lines()[-lines:]) or "(no privoxy log)"

    def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT) -> None:
        """Stop Privoxy (the prefix and its log are kept until close)."""
        if self._proc is not None:
            self._proc.stop(timeout)
            self._proc = None

    def close(self) -> None:
        """Stop Privoxy and remove its prefix."""
        self.stop()
        shutil.rmtree(self.prefix, ignore_errors=True)
