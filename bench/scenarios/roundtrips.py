"""Scenario 2, Redis round trips per operation, counted by Redis itself.

Each operation runs CALLS times, one after another over one keep-alive connection, between two
INFO commandstats snapshots. Commandstats also counts every command a Lua script runs (an EVALSHA
that runs seven commands adds eight calls), so it gives the work Redis did, not the round trips.
Redis' MONITOR feed, read over the same window, tells the commands that came over the network
(one round trip each, an EVALSHA once; VORA's request paths use no pipelines) from those a script
ran (`[0 lua]`). Left out and shown apart: `info` and `echo` (the benchmark's own window marks)
and `ping` (redis-py's health check, which each worker's idle pub/sub connection sends every 30 s).
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import websocket

from bench.context import Bench, Rest, identities
from bench.procs import Server
from bench.report import Row
from bench.wsclient import stamp

USER = "bench-rt"
IDENTITIES = identities("7200", 20)
LOGOUT_PREFIX = "7201"
SOCKET_PREFIX = "7202"
EXCLUDED = ("info", "echo", "monitor", "ping")
_MONITOR_LINE = re.compile(r'^\+[0-9.]+ \[\d+ (?P<source>[^\]]+)\] "(?P<command>[^"]+)"')
# A socket: its admission is one script, its first catch-up read (in the connection) one more, its detach a third.
TARGETS = {"liveness": 0, "get_identity": 1, "setup": 1, "event_subscription": 2, "logout": 2, "websocket_open": 3}
LABELS = {
    "liveness": "GET /health/liveness",
    "get_identity": "GET /identity",
    "setup": "POST /identity/setup",
    "event_subscription": "POST /identity/{id}/eventSubscription",
    "logout": "POST /logout/{id}",
    "websocket_open": "WebSocket open and close (1st socket of a session)",
    "publish": "publish one event (telephony side)",
}


def _commandstats(bench: Bench) -> dict[str, int]:
    stats = bench.redis_info("commandstats")
    return {name.removeprefix("cmdstat_"): int(fields["calls"]) for name, fields in stats.items()}


class Monitor:
    """Read Redis' MONITOR feed in a thread until a marker command shows up."""

    def __init__(self, port: int) -> None:
        self._sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self._sock.sendall(b"MONITOR\r\n")
        self._file = self._sock.makefile("rb")
        if not self._file.readline().startswith(b"+OK"):
            raise RuntimeError("Redis refused MONITOR")
        self.marker = f"bench-window-end-{uuid.uuid4().hex}"
        self.lines: list[str] = []
        self._seen = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            for raw in self._file:
                line = raw.decode(errors="replace").rstrip("\r\n")
                if self.marker in line:
                    self._seen.set()
                    return
                self.lines.append(line)

    def finish(self, bench: Bench) -> tuple[Counter[str], Counter[str]]:
        """Mark the end of the window; return the commands sent by clients and those run by scripts."""
        bench.redis.echo(self.marker)
        seen = self._seen.wait(10)
        with contextlib.suppress(OSError):
            self._sock.close()
        self._thread.join(2)
        if not seen:
            raise RuntimeError("the MONITOR feed never showed the end of the window")
        network: Counter[str] = Counter()
        scripted: Counter[str] = Counter()
        for line in self.lines:
            match = _MONITOR_LINE.match(line)
            if match:
                into = scripted if match["source"] == "lua" else network
                into[match["command"].lower()] += 1
        return network, scripted


def _measure(bench: Bench, calls: int, call: Callable[[int], object]) -> dict[str, Any]:
    before = _commandstats(bench)
    monitor = Monitor(bench.redis_server.port)
    for n in range(calls):
        call(n)
    network, scripted = monitor.finish(bench)
    after = _commandstats(bench)
    executed = {name: count - before.get(name, 0) for name, count in after.items() if count != before.get(name, 0)}
    counted = {name: n for name, n in network.items() if name not in EXCLUDED}
    return {
        "calls": calls,
        "round_trips_per_call": round(sum(counted.values()) / calls, 3),
        "per_command": {name: round(n / calls, 3) for name, n in sorted(counted.items())},
        "run_by_scripts_per_call": {name: round(n / calls, 3) for name, n in sorted(scripted.items())},
        "commandstats_per_call": {
            name: round(n / calls, 3) for name, n in sorted(executed.items()) if name not in EXCLUDED
        },
        "excluded": {name: network[name] for name in EXCLUDED if network.get(name)},
    }


def _expect(status: int, wanted: int, what: str, body: Any) -> None:
    if status != wanted:
        raise RuntimeError(f"{what} answered {status}: {body}")


def _open_socket(server: Server, token: str) -> None:
    ws = websocket.create_connection(f"{server.ws_url}?token={token}", timeout=5)
    try:
        ws.settimeout(0.05)  # let the server attach the socket and read the stream before closing
        with contextlib.suppress(websocket.WebSocketTimeoutException):
            while True:  # past channelOpened, the first message: until nothing more comes
                ws.recv()
    finally:
        ws.close(timeout=1)


def run(bench: Bench) -> dict[str, Any]:
    """Count Redis commands per call for each operation against one VORA."""
    calls = int(bench.seconds(100, 30))
    logout_identities = identities(LOGOUT_PREFIX, calls + 5)
    socket_identities = identities(SOCKET_PREFIX, calls + 5)
    bench.provision(USER, [*IDENTITIES, *logout_identities, *socket_identities])
    setup_body = [{"connectionType": "WebSocket", "identity": i} for i in IDENTITIES]
    figures: dict[str, Any] = {"calls": calls, "excluded_commands": list(EXCLUDED)}
    with bench.vora_server() as vora:
        rest = Rest(vora, bench.token(USER))
        try:

            def liveness(_: int) -> None:
                status, body = rest.call("GET", "/health/liveness")
                _expect(status, 204, "liveness", body)

            def get_identity(_: int) -> None:
                status, body = rest.call("GET", "/identity")
                _expect(status, 200, "GET /identity", body)

            def setup(n: int) -> None:
                status, body = rest.call("POST", "/identity/setup", setup_body[n % len(setup_body)])
                _expect(status, 200, "setup", body)

            def event_subscription(n: int) -> None:
                identity = IDENTITIES[n % len(IDENTITIES)]
                body = (
                    {"subscribeAll": False, "events": ["callRinging", "presence"]} if n % 2 else {"subscribeAll": True}
                )
                status, answer = rest.call("POST", f"/identity/{identity}/eventSubscription", body)
                _expect(status, 200, "eventSubscription", answer)

            def open_session(identity: str) -> str:
                status, body = rest.call(
                    "POST", "/identity/setup", {"connectionType": "WebSocket", "identity": identity}
                )
                _expect(status, 200, "setup", body)
                return str(body["webSocketToken"])

            def logout(n: int) -> None:
                status, body = rest.call("POST", f"/logout/{logout_identities[n]}")
                _expect(status, 200, "logout", body)

            # Warm up: connection pools, the Lua scripts in Redis, lazily imported modules.
            for op in (liveness, get_identity, setup, event_subscription):
                for n in range(10):
                    op(n)
            for identity in logout_identities[calls:]:
                open_session(identity)
            for n in range(calls, calls + 5):
                logout(n)
            tokens = [open_session(i) for i in socket_identities]
            for token in tokens[calls:]:
                _open_socket(vora, token)
            bench.publisher.publish(IDENTITIES[0], "presence", {"status": "busy", "note": stamp()})

            for name, op in (
                ("liveness", liveness),
                ("get_identity", get_identity),
                ("setup", setup),
                ("event_subscription", event_subscription),
            ):
                figures[name] = _measure(bench, calls, op)
            for identity in logout_identities[:calls]:
                open_session(identity)
            figures["logout"] = _measure(bench, calls, logout)
            figures["websocket_open"] = _measure(bench, calls, lambda n: _open_socket(vora, tokens[n]))
            figures["publish"] = _measure(
                bench,
                calls,
                lambda n: bench.publisher.publish(IDENTITIES[n % 5], "presence", {"status": "busy", "note": stamp()}),
            )
        finally:
            rest.close()
    return figures


def rows(figures: dict[str, Any]) -> list[Row]:
    """One line per operation: round trips per call against its target (no baseline: an absolute count)."""
    out = []
    for name, label in LABELS.items():
        result = figures.get(name)
        if not result:
            continue
        target = TARGETS.get(name)
        measured = result["round_trips_per_call"]
        breakdown = ", ".join(f"{cmd} {n:g}" for cmd, n in result["per_command"].items())
        out.append(
            Row(
                f"2 Redis RTT: {label}" + (f" [{breakdown}]" if breakdown else ""),
                measured,
                "",
                None,
                f"<= {target}" if target is not None else "(reported)",
                measured <= target if target is not None else None,
                note=breakdown,
            )
        )
    return out
