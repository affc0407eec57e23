"""Run the examples in examples/ (Node and Java programs) as real processes and read their JSON lines."""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import pytest

TELEPHONY = Path(__file__).resolve().parents[2] / "examples" / "telephony"
LANGUAGES = ("node", "java")
# The commands each language needs, and what installs them (make install for Node, make test-tools for the JDK:
# `java File.java` compiles the file, so a JRE without javac cannot run it).
RUNTIMES = {
    "node": (("node",), "make install (apt-get install nodejs npm)"),
    "java": (("java", "javac"), "make test-tools (apt-get install default-jdk-headless)"),
}
# `java File.java` compiles the file before it runs: a slow first start on a busy machine.
START_TIMEOUT = 60.0

Line = dict[str, Any]


def require_runtime(language: str) -> None:
    """Skip the test, saying what to install, when the language's runtime is missing."""
    commands, installer = RUNTIMES[language]
    missing = [command for command in commands if shutil.which(command) is None]
    if missing:
        pytest.skip(f"{' and '.join(missing)} missing: the {language} examples cannot run; {installer} installs it")


def example_argv(language: str, program: str) -> list[str]:
    """Return the command that runs one example program ('publisher' or 'receiver') of a language."""
    if language == "node":
        return ["node", str(TELEPHONY / "node" / f"{program}.mjs")]
    return ["java", str(TELEPHONY / "java" / f"{program.capitalize()}.java")]


class ExampleProcess:
    """An example program: commands written to its stdin as JSON lines, its JSON lines read from its stdout."""

    def __init__(self, language: str, program: str, env: dict[str, str]) -> None:
        require_runtime(language)
        self.lines: queue.Queue[Line] = queue.Queue()
        self.seen: list[Line] = []
        self._process = subprocess.Popen(
            example_argv(language, program),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, **env},
            text=True,
        )
        self._reader = threading.Thread(target=self._read, name=f"{language}-{program}", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._process.stdout is not None
        for text in self._process.stdout:
            self.lines.put(json.loads(text))

    def send(self, command: dict[str, Any]) -> None:
        """Write one command line to the program."""
        assert self._process.stdin is not None
        self._process.stdin.write(json.dumps(command) + "\n")
        self._process.stdin.flush()

    def next_line(self, match: Callable[[Line], bool] = lambda line: True, timeout: float = 20.0) -> Line:
        """Return the next line that matches (the others are kept in seen), within timeout seconds."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no matching line within {timeout}s; got {self.seen!r}; stderr: {self.stderr()}")
            try:
                line = self.lines.get(timeout=min(remaining, 0.5))
            except queue.Empty:
                if self._process.poll() is not None and self.lines.empty():
                    code = self._process.returncode
                    raise AssertionError(f"the example exited with {code}: {self.stderr()}") from None
                continue
            self.seen.append(line)
            if match(line):
                return line

    def lines_now(self) -> list[Line]:
        """Take every line written so far and not yet read."""
        taken: list[Line] = []
        while not self.lines.empty():
            taken.append(self.lines.get_nowait())
        self.seen.extend(taken)
        return taken

    def stderr(self) -> str:
        """Return what the program wrote on stderr, once it has exited."""
        if self._process.poll() is None or self._process.stderr is None:
            return "(still running)"
        return self._process.stderr.read()[-2000:]

    def close(self) -> None:
        """Close the program's stdin and stop it."""
        if self._process.stdin is not None:
            self._process.stdin.close()
        self._process.terminate()
        try:
            self._process.wait(10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(10)
        for stream in (self._process.stdout, self._process.stderr):
            if stream is not None:
                stream.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


def start_receiver(language: str, push_secret: str, callback_secret: str) -> tuple[ExampleProcess, str]:
    """Start a webhook receiver example on a free loopback port and return it with its base URL."""
    receiver = ExampleProcess(
        language, "receiver", {"VORA_PUSH_SECRET": push_secret, "VORA_HOLDUP_CALLBACK_SECRET": callback_secret}
    )
    try:
        port = receiver.next_line(lambda line: "listening" in line, START_TIMEOUT)["listening"]
    except BaseException:
        receiver.close()
        raise
    return receiver, f"http://127.0.0.1:{port}"
