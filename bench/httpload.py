"""HTTP load: wrk with a generated Lua script, or a documented asyncio fallback (`python -m bench.httpload SPEC`).

Both run as a separate process, keep-alive connections, and print one `BENCH_JSON {...}` line.
Without a rate they go as fast as the server answers (closed loop); with a rate, every request
takes the next slot of a fixed schedule (rate/s), so the offered load does not follow the server.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench.procs import PYTHON, Launcher

WRK_THREADS = 1  # one load thread leaves the second core to the server
MARKER = "BENCH_JSON "


@dataclass
class LoadSpec:
    """One load run: what to send, over how many connections, for how long, at what rate."""

    url: str
    method: str = "GET"
    headers: dict[str, str] = field(default_factory=dict)
    bodies: list[str] = field(default_factory=list)
    connections: int = 32
    seconds: float = 8.0
    rate: float | None = None


@dataclass
class LoadResult:
    """What a load run measured."""

    tool: str
    requests: int
    seconds: float
    rps: float
    errors: int
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    connections: int
    offered_rate: float | None

    def as_dict(self) -> dict[str, Any]:
        """Return a JSON-ready copy."""
        return asdict(self)


def ensure_wrk(procs: Launcher) -> str | None:
    """Return the path of wrk, installing Debian's package when missing and root; None means use the fallback."""
    found = shutil.which("wrk")
    if found or os.geteuid() != 0 or shutil.which("apt-get") is None:
        return found
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-qq", "wrk"]
    for attempt in ([install], [["apt-get", "update", "-qq"], install]):
        try:
            for argv in attempt:
                procs.run(argv, "apt-get", timeout=300, env=env)
        except RuntimeError:
            continue
        found = shutil.which("wrk")
        if found:
            return found
    return None


def _lua_string(text: str) -> str:
    level = "=" * 4
    if f"]{level}]" in text:
        raise ValueError("a header or body holds the Lua long-string terminator")
    return f"[{level}[{text}]{level}]"


PACING_LUA = """
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk_id, bench_timespec *tp);
]]
local clock = ffi.new("bench_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, clock)  -- CLOCK_MONOTONIC
  return tonumber(clock.tv_sec) * 1000 + tonumber(clock.tv_nsec) / 1e6
end
local interval_ms = 1000 / RATE_PER_THREAD
local next_slot = nil
-- Every request, on whichever connection is free, takes the next slot of one fixed schedule.
function delay()
  local now = now_ms()
  if next_slot == nil or next_slot < now then next_slot = now end
  local wait = next_slot - now
  next_slot = next_slot + interval_ms
  return math.floor(wait)
end
"""

DONE_LUA = """
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"socket_errors":%d,"status_errors":%d,' ..
    '"mean_us":%.1f,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


def wrk_script(spec: LoadSpec) -> str:
    """Render the Lua script that makes wrk send this spec's requests and print JSON."""
    lines = [f"wrk.method = {_lua_string(spec.method)}"]
    lines += [f"wrk.headers[ {_lua_string(k)} ] = {_lua_string(v)}" for k, v in spec.headers.items()]
    if len(spec.bodies) == 1:
        lines.append(f"wrk.body = {_lua_string(spec.bodies[0])}")
    elif spec.bodies:
        lines.append("local bodies = {" + ", ".join(_lua_string(b) for b in spec.bodies) + "}")
        lines.append("local turn = 0")
        lines.append("function request()")
        lines.append("  turn = turn % #bodies + 1")
        lines.append("  return wrk.format(nil, nil, nil, bodies[turn])")
        lines.append("end")
    if spec.rate:
        lines.append(PACING_LUA.replace("RATE_PER_THREAD", repr(spec.rate / WRK_THREADS)))
    lines.append(DONE_LUA)
    return "\n".join(lines) + "\n"


def parse_result(output: str, tool: str, spec: LoadSpec) -> LoadResult:
    """Read the BENCH_JSON line a load process printed."""
    line = next((ln for ln in output.splitlines() if ln.startswith(MARKER)), None)
    if line is None:
        raise RuntimeError(f"{tool} printed no result:\n{output[-2000:]}")
    raw = json.loads(line[len(MARKER) :])
    seconds = raw["duration_us"] / 1e6
    return LoadResult(
        tool=tool,
        requests=raw["requests"],
        seconds=round(seconds, 3),
        rps=round(raw["requests"] / seconds, 1) if seconds else 0.0,
        errors=raw["socket_errors"] + raw["status_errors"],
        mean_ms=round(raw["mean_us"] / 1000, 3),
        p50_ms=round(raw["p50_us"] / 1000, 3),
        p90_ms=round(raw["p90_us"] / 1000, 3),
        p99_ms=round(raw["p99_us"] / 1000, 3),
        max_ms=round(raw["max_us"] / 1000, 3),
        connections=spec.connections,
        offered_rate=spec.rate,
    )


def wrk_argv(wrk: str, spec: LoadSpec, script: Path) -> list[str]:
    """Return wrk's command line for one load, its duration rounded up to whole seconds."""
    return [
        wrk,
        "-t", str(WRK_THREADS),
        "-c", str(spec.connections),
        "-d", f"{max(1, math.ceil(spec.seconds))}s",  # wrk refuses a fraction of a second (--quick's rounds)
        "--timeout", "5s",
        "-s", str(script),
        spec.url,
    ]  # fmt: skip


def run_load(procs: Launcher, wrk: str | None, spec: LoadSpec, workdir: Path, name: str) -> LoadResult:
    """Run one load in a separate process (wrk, or the asyncio fallback) and return what it measured."""
    timeout = spec.seconds + 30
    if wrk is not None:
        script = workdir / f"{name}.lua"
        script.write_text(wrk_script(spec))
        return parse_result(procs.run(wrk_argv(wrk, spec, script), f"wrk-{name}", timeout), "wrk", spec)
    spec_path = workdir / f"{name}.json"
    spec_path.write_text(json.dumps(asdict(spec)))
    output = procs.run([PYTHON, "-m", "bench.httpload", str(spec_path)], f"httpload-{name}", timeout)
    return parse_result(output, "python", spec)


# The fallback generator (runs in its own process).


class _Pacer:
    """Hand out the slots of a fixed schedule of rate requests per second."""

    def __init__(self, rate: float) -> None:
        self._interval = 1.0 / rate
        self._next = time.monotonic()

    async def wait(self) -> None:
        now = time.monotonic()
        slot = max(self._next, now)
        self._next = slot + self._interval
        if slot > now:
            await asyncio.sleep(slot - now)


async def _read_response(reader: asyncio.StreamReader) -> int:
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("the server closed the connection")
    status = int(status_line.split()[1])
    length = 0
    while True:
        header = await reader.readline()
        if header in (b"\r\n", b"\n", b""):
            break
        name, _, value = header.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    if length:
        await reader.readexactly(length)
    return status


def _request_bytes(spec: LoadSpec, host: str, path: str, body: str) -> bytes:
    headers = {"Host": host, "Connection": "keep-alive", **spec.headers}
    if body:
        headers["Content-Length"] = str(len(body.encode()))
    head = f"{spec.method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    return head.encode() + body.encode()


async def _connection(
    spec: LoadSpec, pacer: _Pacer | None, deadline: float, latencies: list[float], counts: dict[str, int]
) -> None:
    parts = urlsplit(spec.url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    bodies = spec.bodies or [""]
    requests = [_request_bytes(spec, parts.netloc, path, body) for body in bodies]
    turn = 0
    writer: asyncio.StreamWriter | None = None
    try:
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        while True:
            if pacer is not None:
                await pacer.wait()
            if time.monotonic() >= deadline:
                return
            started = time.perf_counter()
            writer.write(requests[turn % len(requests)])
            turn += 1
            status = await asyncio.wait_for(_read_response(reader), timeout=5)
            latencies.append(time.perf_counter() - started)
            if status >= 400:
                counts["status_errors"] += 1
    except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError, IndexError):
        counts["socket_errors"] += 1
    finally:
        if writer is not None:
            writer.close()


async def _generate(spec: LoadSpec) -> dict[str, Any]:
    latencies: list[float] = []
    counts = {"socket_errors": 0, "status_errors": 0}
    pacer = _Pacer(spec.rate) if spec.rate else None
    started = time.monotonic()
    deadline = started + spec.seconds
    await asyncio.gather(*(_connection(spec, pacer, deadline, latencies, counts) for _ in range(spec.connections)))
    elapsed = time.monotonic() - started
    ordered = sorted(latencies) or [0.0]

    def pct(q: float) -> int:
        return int(ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] * 1e6)

    return {
        "requests": len(latencies),
        "duration_us": int(elapsed * 1e6),
        **counts,
        "mean_us": sum(ordered) / len(ordered) * 1e6,
        "p50_us": pct(50),
        "p90_us": pct(90),
        "p99_us": pct(99),
        "max_us": int(ordered[-1] * 1e6),
    }


def main(argv: list[str]) -> int:
    """Run the fallback generator on the spec file named by argv[0]."""
    spec = LoadSpec(**json.loads(Path(argv[0]).read_text()))
    result = asyncio.run(_generate(spec))
    sys.stdout.write(MARKER + json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
