"""Start child processes in their own session and make sure every one of them ends."""

from __future__ import annotations

import abc
import atexit
import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

DEFAULT_STOP_TIMEOUT = 5.0
_POLL = 0.02

_live_lock = threading.Lock()
_live: set[ManagedProcess] = set()


class ManagedProcess:
    """One child process, leader of its own process group, whose whole group is ended by stop() or kill()."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        cwd: Path,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        name: str | None = None,
    ) -> None:
        self.argv = [str(a) for a in argv]
        self.cwd = Path(cwd)
        self.log_path = Path(log_path)
        self.env = dict(env) if env is not None else None
        self.name = name or Path(self.argv[0]).name
        self._popen: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"<ManagedProcess {self.name} pid={self.pid}>"

    @property
    def pid(self) -> int | None:
        """Return the pid of the running child, or None when none is running."""
        return self._popen.pid if self._popen is not None else None

    def start(self) -> None:
        """Start the child in a new session (so it leads its own process group), logging to log_path."""
        if self._popen is not None:
            raise RuntimeError(f"{self.name} is already running (pid {self._popen.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._popen = subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        with _live_lock:
            _live.add(self)

    def exited(self) -> bool:
        """Tell whether the child has exited, without reaping it (its group id stays reserved until then)."""
        if self._popen is None:
            return True
        if self._popen.returncode is not None:
            return True
        try:
            info = os.waitid(os.P_PID, self._popen.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return True
        return info is not None

    def exit_reason(self) -> str | None:
        """Return a message with the log tail if the child has exited, else None (for wait_for's abort)."""
        if not self.exited():
            return None
        return f"{self.name} exited early; log tail:\n{self.log_tail()}"

    def _signal_group(self, sig: signal.Signals) -> None:
        if self._popen is None or self._popen.returncode is not None:
            return
        # The leader is not reaped yet (see exited), so its pid still names this group and no other.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._popen.pid, sig)

    def _wait_exit(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self.exited():
            if time.monotonic() >= deadline:
                return False
            time.sleep(_POLL)
        return True

    def _reap(self) -> None:
        if self._popen is None:
            return
        # Whatever the leader left in its group (forked children) dies with it.
        self._signal_group(signal.SIGKILL)
        self._popen.wait()
        self._popen = None
        with _live_lock:
            _live.discard(self)

    def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT) -> None:
        """End the process group with SIGTERM, then SIGKILL if it is still there after timeout seconds."""
        if self._popen is None:
            return
        self._signal_group(signal.SIGTERM)
        if not self._wait_exit(timeout):
            self._signal_group(signal.SIGKILL)
        self._reap()

    def kill(self) -> None:
        """End the process group at once with SIGKILL, as a crash would."""
        if self._popen is None:
            return
        self._signal_group(signal.SIGKILL)
        self._reap()

    def log_tail(self, lines: int = 30) -> str:
        """Return the last lines of the child's output."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class Harnessed(abc.ABC):
    """Context-manager protocol of the harness: start() on entry, close() on exit or on a failed start."""

    @abc.abstractmethod
    def start(self) -> Self:
        """Start what the harness manages and return self once it is ready."""

    @abc.abstractmethod
    def close(self) -> None:
        """Stop every process and remove what the harness made; safe to call twice."""

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def live_processes() -> list[ManagedProcess]:
    """Return the managed processes started and not yet stopped in this interpreter."""
    with _live_lock:
        return list(_live)


@atexit.register
def _stop_leftovers() -> None:
    for proc in live_processes():
        proc.stop(timeout=2.0)
