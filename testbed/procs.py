"""Start child processes in their own session and make sure every one of them ends."""

from __future__ import annotations

import abc
import atexit
import contextlib
import ctypes
import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

DEFAULT_STOP_TIMEOUT = 5.0
_POLL = 0.02
_PR_SET_PDEATHSIG = 1
try:  # looked up once here: a forked child must only call it
    _PRCTL: Any = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):
    _PRCTL = None

_live_lock = threading.Lock()
_live: dict[ManagedProcess, None] = {}  # insertion-ordered, so that stop_all() can go newest first


def _die_with_parent() -> None:
    """Ask the kernel to SIGKILL this child when the thread that started it ends (Linux only)."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL)


class ManagedProcess:
    """One child process, leader of its own process group, whose whole group is ended by stop() or kill().

    Its output goes to log_path; with pipes=True its stdin and stdout are pipes to the caller instead
    and only stderr is logged. Unless die_with_parent is False the kernel kills it when the thread that
    started it ends, so that not even a SIGKILLed test run or benchmark leaves it behind.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        cwd: Path,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        name: str | None = None,
        pipes: bool = False,
        die_with_parent: bool = True,
    ) -> None:
        self.argv = [str(a) for a in argv]
        self.cwd = Path(cwd)
        self.log_path = Path(log_path)
        self.env = dict(env) if env is not None else None
        self.name = name or Path(self.argv[0]).name
        self.pipes = pipes
        self.die_with_parent = die_with_parent
        self.returncode: int | None = None
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
        self.returncode = None
        with self.log_path.open("ab") as log:
            self._popen = subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.PIPE if self.pipes else subprocess.DEVNULL,
                stdout=subprocess.PIPE if self.pipes else log,
                stderr=log if self.pipes else subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent if self.die_with_parent else None,  # noqa: PLW1509 - the child only calls prctl, looked up before the fork
            )
        with _live_lock:
            _live[self] = None

    @property
    def stdin(self) -> IO[bytes]:
        """Return the pipe to the child's stdin (pipes=True only)."""
        if self._popen is None or self._popen.stdin is None:
            raise RuntimeError(f"{self.name} has no stdin pipe")
        return self._popen.stdin

    @property
    def stdout(self) -> IO[bytes]:
        """Return the pipe from the child's stdout (pipes=True only)."""
        if self._popen is None or self._popen.stdout is None:
            raise RuntimeError(f"{self.name} has no stdout pipe")
        return self._popen.stdout

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

    def wait(self, timeout: float) -> bool:
        """Wait up to timeout seconds for the child to exit by itself and tell whether it did (stop() reaps it)."""
        deadline = time.monotonic() + timeout
        while not self.exited():
            if time.monotonic() >= deadline:
                return False
            time.sleep(_POLL)
        return True

    def communicate(self, timeout: float) -> bytes:
        """Close the child's stdin and return its whole stdout once it exits (pipes=True only; stop() it after).

        Raises subprocess.TimeoutExpired when the child is still running after timeout seconds.
        """
        if self._popen is None or not self.pipes:
            raise RuntimeError(f"{self.name} is not running with pipes")
        out, _ = self._popen.communicate(timeout=timeout)
        return out

    def _reap(self) -> None:
        if self._popen is None:
            return
        # Whatever the leader left in its group (forked children) dies with it.
        self._signal_group(signal.SIGKILL)
        self.returncode = self._popen.wait()
        for pipe in (self._popen.stdin, self._popen.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        self._popen = None
        with _live_lock:
            _live.pop(self, None)

    def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT) -> None:
        """End the process group with SIGTERM, then SIGKILL if it is still there after timeout seconds."""
        if self._popen is None:
            return
        self._signal_group(signal.SIGTERM)
        if not self.wait(timeout):
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
    """Return the managed processes started and not yet stopped in this interpreter, oldest first."""
    with _live_lock:
        return list(_live)


def stop_all(timeout: float = DEFAULT_STOP_TIMEOUT) -> None:
    """Stop every managed process still running in this interpreter, newest first."""
    for proc in reversed(live_processes()):
        proc.stop(timeout)


atexit.register(stop_all, timeout=2.0)
