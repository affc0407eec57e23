"""Optional profiling (`--profile DIR`): py-spy samples each server worker while a scenario runs."""

from __future__ import annotations

import contextlib
import re
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.procs import PYTHON, Launcher, Server

_LINE = re.compile(r"^(?P<stack>.*) (?P<count>\d+)$")
_FRAME_LINE = re.compile(r":\d+\)$")
_FRAME_FILE = re.compile(r"\((?P<file>[^():]+)(?::\d+)?\)$")
# Where a sample's time goes: the nearest frame (from the leaf up) of a library that does work of its own.
LAYERS = (
    ("jose/", "JWT verification (python-jose)"),
    ("vora/auth/tokens.py", "JWT verification (python-jose)"),
    ("redis/", "Redis client (redis-py)"),
    ("vora/observability/logs.py", "request log (vora/observability/logs.py)"),
    ("logging/", "request log (vora/observability/logs.py)"),
    ("jsonschema/", "JSON Schema validation"),
    ("connexion/", "Connexion decorators, parsing, validation"),
    ("simple_websocket/", "WebSocket framing (simple-websocket, wsproto)"),
    ("wsproto/", "WebSocket framing (simple-websocket, wsproto)"),
    ("vora/", "VORA code"),
    ("flask/", "Flask and Werkzeug"),
    ("werkzeug/", "Flask and Werkzeug"),
    ("flask_sock/", "Flask and Werkzeug"),
    ("gunicorn/", "gunicorn HTTP parsing and response"),
    ("gevent/", "gevent sockets and hub"),
)


def layer_of(frames: list[str]) -> str:
    """Name the layer a sample belongs to: the first library frame from the leaf up that is not the stdlib."""
    for frame in reversed(frames):
        match = _FRAME_FILE.search(frame)
        path = match["file"] if match else ""
        for prefix, layer in LAYERS:
            if path.startswith(prefix):
                return layer
    return "other (standard library)"


def py_spy() -> str | None:
    """Return the py-spy executable beside this Python, or on PATH."""
    beside = Path(PYTHON).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


def summarise(stacks: list[Path], top: int = 30) -> str:
    """Aggregate py-spy raw (collapsed) stacks: the functions with the most samples, own and inclusive."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    layers: Counter[str] = Counter()
    total = 0
    for path in stacks:
        if not path.exists():
            continue
        for line in path.read_text(errors="replace").splitlines():
            match = _LINE.match(line)
            if not match:
                continue
            count = int(match["count"])
            frames = [_FRAME_LINE.sub(")", f) for f in match["stack"].split(";")]
            total += count
            own[frames[-1]] += count
            layers[layer_of(frames)] += count
            for frame in set(frames):
                inclusive[frame] += count
    if not total:
        return "no samples\n"
    lines = [f"{total} samples (the workers' busy time; idle waits are not sampled)", "", "by layer:"]
    lines += [f"  {100 * n / total:5.1f}%  {layer}" for layer, n in layers.most_common()]
    lines += ["", "own time:"]
    lines += [f"  {100 * n / total:5.1f}%  {frame}" for frame, n in own.most_common(top)]
    lines += ["", "inclusive time:"]
    lines += [f"  {100 * n / total:5.1f}%  {frame}" for frame, n in inclusive.most_common(top)]
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def profiled(procs: Launcher, out_dir: Path | None, name: str, server: Server, seconds: float) -> Iterator[None]:
    """Sample every worker of server for seconds while the block runs (nothing when out_dir is None)."""
    executable = py_spy() if out_dir is not None else None
    if out_dir is None or executable is None:
        yield
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    children: list[tuple[Any, Path]] = []
    for pid in server.worker_pids():
        out = out_dir / f"{name}-{pid}.txt"
        argv = [
            executable, "record",
            "--pid", str(pid),
            "--duration", str(max(1, int(seconds))),
            "--rate", "200",
            "--nonblocking",
            "--format", "raw",
            "--output", str(out),
        ]  # fmt: skip
        children.append((procs.start(argv, f"py-spy-{name}-{pid}"), out))
    try:
        yield
    finally:
        for child, _ in children:
            child.wait(seconds + 20)
            child.stop(2.0)
        (out_dir / f"{name}-summary.txt").write_text(summarise([out for _, out in children]))
