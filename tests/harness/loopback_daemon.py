"""Run a daemon the tests start themselves (tinyproxy, Privoxy) on a free loopback port, its files in a prefix."""

from __future__ import annotations

import abc
import shutil
import tempfile
from pathlib import Path
from typing import ClassVar, Self

import pytest

from testbed.ports import HOST, free_port
from testbed.procs import DEFAULT_STOP_TIMEOUT, Harnessed, ManagedProcess
from testbed.wait import port_accepts, wait_for

_SEARCH_PATH = "/usr/bin:/usr/sbin:/usr/local/bin:/usr/local/sbin"


def find_binary(name: str) -> str | None:
    """Return the path of a Debian package's binary (make test-tools installs them), or None."""
    return shutil.which(name) or shutil.which(name, path=_SEARCH_PATH)


def binary_or_skip(name: str) -> str:
    """Return the binary, or skip the test when it is not installed."""
    binary = find_binary(name)
    if binary is None:
        pytest.skip(f"{name} is not installed (make test-tools installs it: apt-get install {name})")
    return binary


class LoopbackDaemon(Harnessed):
    """One daemon in the foreground on a free loopback port; what it did is read from its log."""

    name: ClassVar[str]  # the program, for messages and the prefix's name

    def __init__(self, *, binary: str, startup_timeout: float = 10.0, workdir: Path | None = None) -> None:
        self.binary = binary
        self.host = HOST
        self.port = free_port()
        self.startup_timeout = startup_timeout
        # A given workdir is kept (a suite's log directory); a temp one goes with close().
        self._given_workdir = workdir
        if workdir is not None:
            workdir.mkdir(parents=True, exist_ok=True)
        self.prefix = workdir if workdir is not None else Path(tempfile.mkdtemp(prefix=f"vora-{self.name}-"))
        self._proc: ManagedProcess | None = None

    @property
    def url(self) -> str:
        """Return the daemon's URL."""
        return f"http://{self.host}:{self.port}"

    @property
    @abc.abstractmethod
    def log_path(self) -> Path:
        """Return the log the daemon writes what it did to."""

    @property
    def output_path(self) -> Path:
        """Return where the process' standard output and error go (its log, unless it writes one of its own)."""
        return self.log_path

    @abc.abstractmethod
    def command(self) -> list[str]:
        """Write the daemon's files into the prefix and return the command that runs it in the foreground."""

    def start(self) -> Self:
        """Start the daemon and wait until its port accepts."""
        if self._proc is not None:
            raise RuntimeError(f"{self.name} is already running")
        proc = ManagedProcess(self.command(), cwd=self.prefix, log_path=self.output_path)
        proc.start()
        self._proc = proc
        try:
            wait_for(
                lambda: port_accepts(self.port, self.host),
                self.startup_timeout,
                what=f"{self.name} to accept on port {self.port}",
                abort=lambda: proc.exit_reason() and f"{proc.exit_reason()}\n{self.log_tail()}",
            )
        except BaseException:
            self.stop()
            raise
        return self

    def log_lines(self) -> list[str]:
        """Return the daemon's log lines."""
        try:
            return self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return []

    def log_tail(self, lines: int = 40) -> str:
        """Return the last lines of the log, for a failure's message."""
        return "\n".join(self.log_lines()[-lines:]) or f"(no {self.name} log)"

    def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT) -> None:
        """Stop the daemon (the prefix and its log are kept until close)."""
        if self._proc is not None:
            self._proc.stop(timeout)
            self._proc = None

    def close(self) -> None:
        """Stop the daemon and remove its prefix unless it was given."""
        self.stop()
        if self._given_workdir is None:
            shutil.rmtree(self.prefix, ignore_errors=True)
