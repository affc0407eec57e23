"""Checks of the nginx example in deploy/nginx: parsed offline, then run against loopback backends."""

from __future__ import annotations

import functools
import http.client
import json
import os
import queue
import re
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast

import pytest

from testbed.ports import free_port
from tests.harness.artefacts import (
    API_PORT,
    ASYNCAPI,
    LOOPBACK,
    METRICS_PORT,
    NGINX_EXAMPLE,
    NGINX_TIMEOUT_UNITS,
    SPEC,
    SSE_PATH,
    WS_PATH,
)
from tests.harness.nginx import nginx_or_skip
from vora.core.settings import Settings
from vora.observability.logs import request_id_of


@dataclass
class _Directive:
    name: str
    args: list[str]
    block: list[_Directive] | None = None


def _nginx_tokens(text: str) -> Iterator[tuple[str, bool]]:
    """Yield (token, was_quoted) pairs of an nginx config, without comments."""
    i = 0
    while i < len(text):
        char = text[i]
        if char.isspace():
            i += 1
        elif char == "#":
            end = text.find("\n", i)
            i = len(text) if end == -1 else end
        elif char in ";{}":
            yield char, False
            i += 1
        elif char in "\"'":
            value: list[str] = []
            i += 1
            while text[i] != char:
                if text[i] == "\\" and text[i + 1] in (char, "\\"):
                    i += 1
                value.append(text[i])
                i += 1
            yield "".join(value), True
            i += 1
        else:
            start = i
            while i < len(text) and not text[i].isspace() and text[i] not in ";{}":
                i += 1
            yield text[start:i], False


def _parse_nginx(text: str) -> list[_Directive]:
    tokens = list(_nginx_tokens(text))
    position = 0

    def block() -> list[_Directive]:
        nonlocal position
        directives: list[_Directive] = []
        words: list[str] = []
        while position < len(tokens):
            value, quoted = tokens[position]
            position += 1
            if not quoted and value == ";":
                directives.append(_Directive(words[0], words[1:]))
                words = []
            elif not quoted and value == "{":
                name, args = words[0], words[1:]
                directives.append(_Directive(name, args, block()))
                words = []
            elif not quoted and value == "}":
                assert not words, f"unterminated directive {words}"
                return directives
            else:
                words.append(value)
        assert not words, f"unterminated directive {words}"
        return directives

    return block()


@functools.cache
def _nginx() -> tuple[_Directive, ...]:
    return tuple(_parse_nginx(NGINX_EXAMPLE.read_text()))


def _walk(directives: list[_Directive] | tuple[_Directive, ...]) -> Iterator[_Directive]:
    for directive in directives:
        yield directive
        if directive.block is not None:
            yield from _walk(directive.block)


def _named(directives: list[_Directive] | tuple[_Directive, ...], name: str) -> list[_Directive]:
    return [d for d in directives if d.name == name]


def _server() -> list[_Directive]:
    (server,) = _named(_nginx(), "server")
    assert server.block is not None
    return server.block


def _location(*args: str) -> list[_Directive]:
    matches = [d.block for d in _named(_server(), "location") if tuple(d.args) == args]
    assert len(matches) == 1, f"no single location {' '.join(args)}"
    (block,) = matches
    assert block is not None
    return block


def _effective(location: list[_Directive], name: str) -> list[_Directive]:
    """Return a location's own directives of one name, or the server's when it has none (nginx inheritance)."""
    return _named(location, name) or _named(_server(), name)


def _proxy_headers(location: list[_Directive]) -> dict[str, str]:
    return {d.args[0].lower(): d.args[1] for d in _effective(location, "proxy_set_header")}


def _map_of(variable: str) -> tuple[str, dict[str, str]]:
    """Return the source variable and the entries of the map block that sets a variable."""
    (found,) = [d for d in _named(_nginx(), "map") if d.args[1] == variable]
    assert found.block is not None
    return found.args[0], {d.name: d.args[0] for d in found.block}


def _seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+)(ms|s|m|h|d)?", value)
    assert match, f"not an nginx time: {value}"
    return int(match.group(1)) * NGINX_TIMEOUT_UNITS[match.group(2) or "s"]


def _proxied_locations() -> list[list[_Directive]]:
    return [d.block for d in _named(_server(), "location") if d.block is not None and _named(d.block, "proxy_pass")]


def test_nginx_access_log_never_includes_query_strings() -> None:
    """Each access log uses the example's own format, which logs $uri and nothing that carries the query string."""
    formats = {}
    for log_format in _named(_nginx(), "log_format"):
        name, *parts = log_format.args
        formats[name] = " ".join(p for p in parts if not p.startswith("escape="))
    assert formats
    for name, text in formats.items():
        variables = set(re.findall(r"\$(\w+)", text))
        assert "uri" in variables, name
        leaking = {v for v in variables if v in {"request", "request_uri", "args", "query_string", "http_referer"}}
        leaking |= {v for v in variables if v.startswith("arg_")}
        assert not leaking, f"log_format {name} logs {sorted(leaking)}"
    access_logs = [d for d in _walk(_nginx()) if d.name == "access_log"]
    assert access_logs
    for access_log in access_logs:
        assert access_log.args == ["off"] or (len(access_log.args) >= 2 and access_log.args[1] in formats), (
            f"access_log {' '.join(access_log.args)} falls back to a format that logs $request"
        )


def test_nginx_websocket_errors_do_not_log_the_token() -> None:
    """The WebSocket location logs only critical errors: nginx error lines quote the request line, token included."""
    error_logs = _named(_location("=", WS_PATH), "error_log")
    assert error_logs
    assert all(log.args[-1] in {"crit", "alert", "emerg"} for log in error_logs)


def test_nginx_balances_over_several_instances_without_stickiness() -> None:
    """Every proxied location goes to one upstream of several VORA instances on 18085 with no sticky method."""
    (upstream,) = _named(_nginx(), "upstream")
    assert upstream.block is not None
    servers = _named(upstream.block, "server")
    assert len(servers) >= 2
    assert all(s.args[0].endswith(f":{API_PORT}") for s in servers)
    sticky = {"ip_hash", "hash", "sticky", "sticky_cookie_insert", "random"} & {d.name for d in upstream.block}
    assert not sticky
    locations = _proxied_locations()
    assert locations
    for location in locations:
        assert [d.args for d in _named(location, "proxy_pass")] == [[f"http://{upstream.args[0]}"]]


def test_nginx_never_proxies_the_metrics_port() -> None:
    """The example never sends traffic to the metrics port 9102."""
    assert not [d for d in _walk(_nginx()) if any(str(METRICS_PORT) in arg for arg in d.args)]


def test_nginx_upgrades_websockets_and_waits_long_enough() -> None:
    """The WebSocket location forwards Upgrade and Connection over HTTP/1.1 and outwaits VORA's ping and heartbeat."""
    location = _location("=", WS_PATH)
    assert WS_PATH in SPEC.read_text()
    headers = _proxy_headers(location)
    assert headers["upgrade"] == "$http_upgrade"
    source, entries = _map_of(headers["connection"])
    assert source == "$http_upgrade"
    assert entries["default"] == "upgrade"
    assert [d.args for d in _effective(location, "proxy_http_version")] == [["1.1"]]
    (read_timeout,) = _named(location, "proxy_read_timeout")
    defaults = Settings()
    assert _seconds(read_timeout.args[0]) >= max(600, 2 * defaults.ws_ping_interval, 2 * defaults.ws_heartbeat_interval)


def test_nginx_streams_server_sent_events_unbuffered_and_long() -> None:
    """The event-stream location passes each event at once (no buffering, no cache) and outwaits the heartbeat."""
    location = _location("=", SSE_PATH)
    assert SSE_PATH in ASYNCAPI.read_text()
    assert [d.args for d in _named(location, "proxy_buffering")] == [["off"]]
    assert [d.args for d in _named(location, "proxy_cache")] == [["off"]]
    assert [d.args for d in _effective(location, "proxy_http_version")] == [["1.1"]]
    (read_timeout,) = _named(location, "proxy_read_timeout")
    assert _seconds(read_timeout.args[0]) >= max(600, 2 * Settings().ws_heartbeat_interval)


def test_nginx_passes_a_request_id_vora_accepts() -> None:
    """Proxied requests carry X-Request-ID: the caller's when VORA would accept it, else nginx's own $request_id."""
    (variable,) = {_proxy_headers(location)["x-request-id"] for location in _proxied_locations()}
    source, entries = _map_of(variable)
    assert source == "$http_x_request_id"
    assert entries["default"] == "$request_id"
    (accept,) = [pattern for pattern, value in entries.items() if value == "$http_x_request_id"]
    assert accept.startswith("~")
    samples = ["abc-123", "trace.1:2_x", "a" * 128, "a" * 129, "bad id!", "x/y", "réq", "id;drop", ""]
    for sample in samples:
        nginx_keeps = re.search(accept[1:], sample) is not None
        vora_keeps = request_id_of({"HTTP_X_REQUEST_ID": sample}) == sample
        assert nginx_keeps == vora_keeps, sample


@pytest.fixture(scope="module")
def nginx_binary() -> str:
    """Return nginx (apt-get installs nginx-light when root and it is missing), or skip when it cannot be had."""
    return nginx_or_skip()


def _render_example(prefix: Path, listen_port: int, upstream_ports: list[int]) -> Path:
    """Write the example, with loopback addresses and logs under prefix, and a minimal nginx.conf including it."""
    text = NGINX_EXAMPLE.read_text()
    text, listens = re.subn(r"(?m)^(\s*)listen\s+[^;]+;", rf"\g<1>listen {LOOPBACK}:{listen_port};", text)
    assert listens == 1
    ports = iter(upstream_ports)

    def loopback_server(match: re.Match[str]) -> str:
        return f"{match[1]}server {LOOPBACK}:{next(ports)}"

    text, servers = re.subn(r"(?m)^(\s*)server\s+[\w.\[\]:-]+:\d+", loopback_server, text)
    assert servers == len(upstream_ports)
    text = text.replace("/var/log/nginx/", f"{prefix}/logs/")
    # Nothing in the rendered config may send nginx anywhere but the loopback interface.
    assert all(address.startswith("127.") for address in re.findall(r"\b\d{1,3}(?:\.\d{1,3}){3}\b", text))
    assert "resolver" not in text
    assert "/var/" not in text
    (prefix / "logs").mkdir()
    (prefix / "temp").mkdir()
    (prefix / "vora.conf").write_text(text)
    conf = prefix / "nginx.conf"
    temp = "\n".join(
        f"    {kind}_temp_path {prefix}/temp/{kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    conf.write_text(
        f"pid {prefix}/nginx.pid;\n"
        "error_log stderr notice;\n"
        "worker_processes 1;\n"
        "events {\n    worker_connections 256;\n}\n"
        f"http {{\n{temp}\n    include {prefix}/vora.conf;\n}}\n"
    )
    return conf


def _example_upstream_count() -> int:
    (upstream,) = _named(_nginx(), "upstream")
    assert upstream.block is not None
    return len(_named(upstream.block, "server"))


@pytest.mark.topology
def test_nginx_example_passes_nginx_t(nginx_binary: str, tmp_path: Path) -> None:
    """`nginx -t` accepts the example included in an http block, with loopback addresses and logs in a temp prefix."""
    upstreams = [free_port() for _ in range(_example_upstream_count())]
    conf = _render_example(tmp_path, free_port(), upstreams)
    result = subprocess.run(
        [nginx_binary, "-t", "-p", f"{tmp_path}/", "-c", str(conf), "-e", "stderr"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


class _Backend(ThreadingHTTPServer):
    """A stand-in VORA instance on the loopback that records each request and echoes one line after an upgrade."""

    daemon_threads = True

    def __init__(self, name: str) -> None:
        super().__init__((LOOPBACK, 0), _BackendHandler)
        self.name = name
        self.seen: list[dict[str, Any]] = []
        self.thread = threading.Thread(target=self.serve_forever, name=f"backend-{name}", daemon=True)

    @property
    def port(self) -> int:
        """Return the port the backend listens on."""
        return int(self.server_address[1])


class _BackendHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        backend = cast(_Backend, self.server)
        backend.seen.append({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}})
        if self.headers.get("Upgrade", "").lower() == "websocket":
            self.send_response(101)
            self.send_header("Upgrade", "websocket")
            self.send_header("Connection", "Upgrade")
            self.end_headers()
            self.wfile.write(self.rfile.readline())
            self.close_connection = True
            return
        body = json.dumps({"backend": backend.name}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the test output quiet."""


class _RunningNginx:
    """nginx in the foreground (daemon off), started from a rendered config and stopped by its own pid."""

    def __init__(self, binary: str, prefix: Path, conf: Path) -> None:
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.output: list[str] = []
        self.proc = subprocess.Popen(
            [binary, "-p", f"{prefix}/", "-c", str(conf), "-e", "stderr", "-g", "daemon off;"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self.reader = threading.Thread(target=self._read, name="nginx-stderr", daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            self.lines.put(raw.decode(errors="replace"))
        self.lines.put(None)

    def wait_started(self, timeout: float = 15.0) -> None:
        """Block until the master reports its worker started (its sockets listen before that), or fail."""
        while True:
            try:
                line = self.lines.get(timeout=timeout)
            except queue.Empty:
                pytest.fail(f"nginx did not start within {timeout}s:\n{''.join(self.output)}")
            if line is None:
                pytest.fail(f"nginx exited with {self.proc.wait()}:\n{''.join(self.output)}")
            self.output.append(line)
            if "start worker process" in line:
                return

    def stop(self) -> None:
        """Ask the master to finish gracefully (SIGQUIT) and wait; kill its process group only if it hangs."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.reader.join(timeout=15)
        if self.proc.stderr is not None:
            self.proc.stderr.close()


@pytest.fixture
def backends() -> Iterator[list[_Backend]]:
    """Yield one loopback stand-in per upstream server of the example, shut down afterwards."""
    started = [_Backend(f"vora-{n}") for n in range(1, _example_upstream_count() + 1)]
    for backend in started:
        backend.thread.start()
    yield started
    for backend in started:
        backend.shutdown()
        backend.server_close()
        backend.thread.join(timeout=15)


@pytest.fixture
def example_nginx(nginx_binary: str, backends: list[_Backend], tmp_path: Path) -> Iterator[tuple[_RunningNginx, int]]:
    """Yield the example config running in nginx on a loopback port, in front of the stand-in backends."""
    port = free_port()
    conf = _render_example(tmp_path, port, [b.port for b in backends])
    nginx = _RunningNginx(nginx_binary, tmp_path, conf)
    try:
        nginx.wait_started()
        yield nginx, port
    finally:
        nginx.stop()


def _get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection(LOOPBACK, port, timeout=10)
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def _websocket_echo(port: int, path: str, request_id: str, line: bytes) -> tuple[bytes, bytes]:
    """Send a WebSocket handshake through nginx, then one line; return the response head and all bytes after it."""
    handshake = (
        f"GET {path} HTTP/1.1\r\nHost: vora.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        f"X-Request-ID: {request_id}\r\n\r\n"
    )
    with socket.create_connection((LOOPBACK, port), timeout=10) as sock:
        sock.sendall(handshake.encode())
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = sock.recv(4096)
            assert chunk, f"nginx closed the connection during the handshake: {received!r}"
            received += chunk
        head, _, rest = received.partition(b"\r\n\r\n")
        sock.sendall(line)
        while chunk := sock.recv(4096):  # the backend closes after its echo; nginx has logged by then
            rest += chunk
    return head, rest


@pytest.mark.topology
def test_nginx_example_proxies_as_documented(
    example_nginx: tuple[_RunningNginx, int], backends: list[_Backend], tmp_path: Path
) -> None:
    """Run for real, the example spreads requests, tunnels a WebSocket, passes request ids and logs no query string."""
    nginx, port = example_nginx

    status, headers, _ = _get(port, "/vora/health/liveness?token=SECRET-REST", {"X-Request-ID": "trace-abc.1:2"})
    assert status == 200
    assert headers["x-request-id"] == "trace-abc.1:2"
    status, headers, _ = _get(port, "/vora/identity", {"X-Request-ID": "not a safe id!"})
    assert status == 200
    generated_id = headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated_id)
    served = {json.loads(_get(port, "/vora/health/readiness")[2])["backend"] for _ in range(2 * len(backends))}
    assert len(served) >= 2, "every request went to one instance"
    status, _, _ = _get(port, "/metrics")
    assert status == 404

    head, echoed = _websocket_echo(port, f"{WS_PATH}?token=SECRET-WS", "ws-trace-1", b"hello through nginx\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    assert echoed == b"hello through nginx\n"

    requests = [request for backend in backends for request in backend.seen]
    assert "/metrics" not in {r["path"] for r in requests}
    by_path = {r["path"]: r["headers"] for r in requests}
    assert by_path["/vora/health/liveness?token=SECRET-REST"]["x-request-id"] == "trace-abc.1:2"
    assert by_path["/vora/identity"]["x-request-id"] == generated_id
    assert "upgrade" not in by_path["/vora/identity"]
    assert "connection" not in by_path["/vora/identity"], "upstream keep-alive needs an empty Connection header"
    websocket = by_path[f"{WS_PATH}?token=SECRET-WS"]
    assert websocket["upgrade"] == "websocket"
    assert websocket["connection"].lower() == "upgrade"
    assert websocket["x-request-id"] == "ws-trace-1"
    assert websocket["x-forwarded-for"] == LOOPBACK

    nginx.stop()
    log = (tmp_path / "logs" / "vora-access.log").read_text()
    entries = [json.loads(line) for line in log.splitlines()]
    assert {"/vora/health/liveness", "/vora/identity", WS_PATH, "/metrics"} <= {e["uri"] for e in entries}
    assert {e["request_id"] for e in entries} >= {"trace-abc.1:2", generated_id, "ws-trace-1"}
    assert "SECRET" not in log
    assert "token" not in log
