"""A loopback HTTP control server through which SDK test suites in other languages drive real VORA instances."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import redis

from testbed.ports import HOST, free_port
from testbed.vora_server import LIVE_TIMEOUT, RunningServer, is_live, running_server
from testbed.wait import wait_for
from tests.harness.devauth import DevAuth
from tests.harness.forward_proxy import ForwardProxy
from tests.harness.loopback_daemon import find_binary
from tests.harness.nginx import Nginx, WebSocketPolicy
from tests.harness.oauth import SERVICE_CLIENT, SERVICE_SECRET
from tests.harness.tokens import AUDIENCE
from vora.store.directory import Directory

Json = dict[str, Any]


@dataclass
class Instances:
    """Real VORA instances started on request, by name, sharing one Redis; all stopped by close()."""

    base_env: dict[str, str]
    log_dir: Path
    redis_client: redis.Redis
    mint: Callable[[str, tuple[str, ...] | None, int], str]
    _stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    _running: dict[str, RunningServer] = field(default_factory=dict)
    _proxies: dict[str, Nginx] = field(default_factory=dict)
    _forward_proxies: dict[str, ForwardProxy] = field(default_factory=dict)
    _providers: dict[str, DevAuth] = field(default_factory=dict)
    # One long-lived thread starts every process: the kernel ends a child when the thread that started
    # it ends (ManagedProcess sets PR_SET_PDEATHSIG), and the HTTP server's request threads are short-lived.
    _starter: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="starter"))

    def start(self, name: str, env: dict[str, str]) -> RunningServer:
        """Return the instance of this name, starting it with these extra VORA_* variables if it is not running."""
        return self._starter.submit(self._start, name, env).result()

    def _start(self, name: str, env: dict[str, str]) -> RunningServer:
        if name not in self._running:
            self._running[name] = self._stack.enter_context(
                running_server({**self.base_env, **env}, self.log_dir / name)
            )
        return self._running[name]

    def proxy(self, name: str, upstreams: list[str], websocket: WebSocketPolicy) -> str:
        """Return the base URL of the nginx of this name in front of these instances, starting it if needed."""
        return self._starter.submit(self._proxy, name, upstreams, websocket).result()

    def _proxy(self, name: str, upstreams: list[str], websocket: WebSocketPolicy) -> str:
        if name not in self._proxies:
            ports = [self._running[upstream].port for upstream in upstreams]
            nginx = Nginx(ports, workdir=self.log_dir / f"nginx-{name}", websocket=websocket)
            self._proxies[name] = self._stack.enter_context(nginx)
        return f"{self._proxies[name].url}/vora"

    def forward_proxy(self, name: str, credentials: tuple[str, str] | None) -> Json:
        """Describe the tinyproxy of this name (CONNECT to any port; Basic auth with credentials), started if need be.

        Without tinyproxy on the machine the answer is {"skip": why}, for the suite to skip its proxy tests.
        """
        binary = find_binary("tinyproxy")
        if binary is None:
            return {"skip": "tinyproxy is not installed (make test-tools installs it: apt-get install tinyproxy)"}
        return self._starter.submit(self._forward_proxy, name, binary, credentials).result()

    def _forward_proxy(self, name: str, binary: str, credentials: tuple[str, str] | None) -> Json:
        if name not in self._forward_proxies:
            proxy = ForwardProxy(binary=binary, credentials=credentials, workdir=self.log_dir / f"tinyproxy-{name}")
            self._forward_proxies[name] = self._stack.enter_context(proxy)
        proxy = self._forward_proxies[name]
        return {"url": proxy.url, "urlWithCredentials": proxy.url_with_credentials, "port": proxy.port}

    def forward_proxy_requests(self, name: str) -> list[list[str]]:
        """Return the requests the tinyproxy of this name received so far: [method, target] each."""
        return [list(request) for request in self._forward_proxies[name].requests()]

    def devauth(self, name: str, access_token_ttl: int) -> Json:
        """Describe the dev authorization server of this name (one service client), starting it if needed."""
        return self._starter.submit(self._devauth, name, access_token_ttl).result()

    def _devauth(self, name: str, access_token_ttl: int) -> Json:
        if name not in self._providers:
            workdir = self.log_dir / f"devauth-{name}"
            workdir.mkdir(parents=True, exist_ok=True)
            provider = DevAuth(
                audience=AUDIENCE,
                users={"carol": "carol-s3cret"},
                service_clients={SERVICE_CLIENT: SERVICE_SECRET},
                access_token_ttl=access_token_ttl,
                workdir=workdir,
            )
            self._providers[name] = self._stack.enter_context(provider)
        provider = self._providers[name]
        return {
            "issuer": provider.issuer,
            "tokenUrl": provider.discovery()["token_endpoint"],
            "clientId": SERVICE_CLIENT,
            "clientSecret": SERVICE_SECRET,
            # What an instance must be started with to trust this provider, and only it.
            "vora": {
                "VORA_DEV_KEY": "",
                "VORA_OAUTH_JWKS": provider.jwks_url,
                "VORA_OAUTH_ISSUER": provider.issuer,
                "VORA_OAUTH_LEEWAY": "0",
            },
        }

    def act(self, name: str, action: str) -> None:
        """Kill (SIGKILL), restart, terminate (SIGTERM, drain), pause (SIGSTOP) or resume (SIGCONT) an instance."""
        self._starter.submit(self._act, name, action).result()

    def _act(self, name: str, action: str) -> None:
        server = self._running[name]
        process = server.process
        if action == "kill":
            process.kill()
        elif action == "terminate":
            process.stop(timeout=30)
        elif action == "restart":
            process.start()
            wait_for(lambda: is_live(server.port), LIVE_TIMEOUT, what=f"{name} live again", abort=process.exit_reason)
        elif action in ("pause", "resume") and process.pid is not None:
            os.killpg(process.pid, signal.SIGSTOP if action == "pause" else signal.SIGCONT)
        else:
            raise ValueError(f"unknown action {action!r}")

    def close(self) -> None:
        """Stop every instance (resumed first, so that a paused one can drain)."""
        for server in self._running.values():
            if server.process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(server.process.pid, signal.SIGCONT)
        self._starter.submit(self._stack.close).result()
        self._starter.shutdown()


def _describe(server: RunningServer) -> Json:
    return {"baseUrl": server.base_url, "serverApiUrl": server.server_api_url, "port": server.port}


def _handler(instances: Instances) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            """Keep the test output quiet."""

        def _answer(self, status: int, body: Json) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            """Route one control request."""
            length = int(self.headers.get("Content-Length") or 0)
            body: Json = json.loads(self.rfile.read(length) or b"{}")
            parts = [p for p in self.path.split("/") if p]
            try:
                if parts == ["instances"]:
                    self._answer(200, _describe(instances.start(body["name"], body.get("env", {}))))
                elif parts == ["proxies"]:
                    base_url = instances.proxy(body["name"], body["instances"], body.get("websocket", "pass"))
                    self._answer(200, {"baseUrl": base_url})
                elif len(parts) == 3 and parts[0] == "instances":
                    instances.act(parts[1], parts[2])
                    self._answer(200, {})
                elif parts == ["forward-proxies"]:
                    credentials = body.get("credentials")
                    pair = (str(credentials[0]), str(credentials[1])) if credentials else None
                    self._answer(200, instances.forward_proxy(body["name"], pair))
                elif len(parts) == 3 and parts[0] == "forward-proxies" and parts[2] == "requests":
                    self._answer(200, {"requests": instances.forward_proxy_requests(parts[1])})
                elif parts == ["devauth"]:
                    self._answer(200, instances.devauth(body["name"], int(body.get("accessTokenTtl", 600))))
                elif parts == ["tokens"]:
                    scopes = tuple(body["scopes"]) if "scopes" in body else None
                    token = instances.mint(body["sub"], scopes, int(body.get("lifetime", 3600)))
                    self._answer(200, {"accessToken": token})
                elif parts == ["identities"]:
                    # As the telephony side provisions: the directory is marked provisioned (a stranger gets 404).
                    Directory(instances.redis_client).add(body["sub"], list(body["identities"]))
                    self._answer(200, {})
                else:
                    self._answer(404, {"error": f"no control route {self.path}"})
            except Exception as exc:  # noqa: BLE001 - reported to the suite that asked
                self._answer(500, {"error": f"{type(exc).__name__}: {exc}"})

    return Handler


@contextlib.contextmanager
def control_server(instances: Instances) -> Iterator[str]:
    """Serve the control API on a loopback port until the block ends and yield its URL."""
    server = ThreadingHTTPServer((HOST, free_port()), _handler(instances))
    thread = threading.Thread(target=server.serve_forever, name="sdk-control", daemon=True)
    thread.start()
    try:
        yield f"http://{HOST}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        instances.close()
