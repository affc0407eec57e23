"""Run nginx as a load balancer in front of loopback upstreams, with everything under a temp prefix."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, Self

import pytest

from testbed.ports import HOST, free_port
from testbed.procs import DEFAULT_STOP_TIMEOUT, Harnessed, ManagedProcess
from testbed.wait import port_accepts, wait_for

_SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin", "/sbin"])
_APT_TIMEOUT = 600.0


# What the proxy does with WebSocket upgrades at /vora/ws: pass them (the example's config), refuse them
# with its own 403 page, or strip Upgrade and Connection so that the upstream sees a plain GET.
WebSocketPolicy = Literal["pass", "refuse", "strip"]


class NginxUnavailable(RuntimeError):
    """nginx is not installed and could not be installed."""


def find_nginx() -> str | None:
    """Return the path of the nginx binary, or None."""
    return shutil.which("nginx") or shutil.which("nginx", path=_SEARCH_PATH)


def ensure_nginx(*, install: bool = True) -> str:
    """Return the nginx binary, installing Debian's nginx-light (or nginx) with apt-get when root and missing."""
    path = find_nginx()
    if path is not None:
        return path
    if not install or os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise NginxUnavailable("nginx is not installed (as root: apt-get install -y nginx-light)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], env=env, check=False, capture_output=True, timeout=_APT_TIMEOUT)
    for package in ("nginx-light", "nginx"):
        result = subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", package],
            env=env,
            check=False,
            capture_output=True,
            text=True,
            timeout=_APT_TIMEOUT,
        )
        path = find_nginx()
        if result.returncode == 0 and path is not None:
            return path
    raise NginxUnavailable("apt-get could install neither nginx-light nor nginx")


# $uri, never $request or $request_uri: WebSocket tokens may travel in query strings.
_LOG_FORMAT = (
    '\'$remote_addr [$time_local] "$request_method $uri $server_protocol" $status $body_bytes_sent '
    "upstream=$upstream_addr upstream_status=$upstream_status rt=$request_time'"
)


class Nginx(Harnessed):
    """An nginx master (one worker) that balances round-robin over 127.0.0.1 upstreams and proxies WebSockets.

    websocket="refuse" or "strip" makes it a proxy that blocks upgrades at /vora/ws, as corporate ones do.
    """

    def __init__(
        self,
        upstream_ports: Sequence[int],
        listen_port: int | None = None,
        *,
        workdir: Path | str | None = None,
        fail_timeout_s: int = 5,
        connect_timeout_s: float = 1.0,
        read_timeout_s: float = 3600.0,
        startup_timeout: float = 10.0,
        binary: str | None = None,
        websocket: WebSocketPolicy = "pass",
        tls: tuple[Path, Path] | None = None,
    ) -> None:
        if not upstream_ports:
            raise ValueError("nginx needs at least one upstream port")
        self.upstream_ports = [int(p) for p in upstream_ports]
        self.listen_port = listen_port if listen_port is not None else free_port()
        self.host = HOST
        self.fail_timeout_s = fail_timeout_s
        self.connect_timeout_s = connect_timeout_s
        # How long nginx waits for an upstream's answer before it answers 504 itself (long, for sockets, by default).
        self.read_timeout_s = read_timeout_s
        self.startup_timeout = startup_timeout
        self._binary = binary
        self.websocket = websocket
        self.tls = tls  # (certificate, key): terminate TLS on the listen port (https://), as a production front does
        self._given_workdir = Path(workdir) if workdir is not None else None
        self._prefix: Path | None = None
        self._proc: ManagedProcess | None = None

    @property
    def url(self) -> str:
        """Return the URL nginx listens on: https:// with tls, else http://."""
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.listen_port}"

    @property
    def prefix(self) -> Path:
        """Return the prefix directory that holds config, pid file, logs and temp paths."""
        if self._prefix is None:
            if self._given_workdir is not None:
                self._given_workdir.mkdir(parents=True, exist_ok=True)
                self._prefix = self._given_workdir
            else:
                self._prefix = Path(tempfile.mkdtemp(prefix="vora-nginx-"))
            # Workers drop root privileges: they must be able to reach the temp paths below.
            self._prefix.chmod(0o755)
        return self._prefix

    @property
    def config_path(self) -> Path:
        """Return the generated nginx.conf."""
        return self.prefix / "nginx.conf"

    @property
    def access_log(self) -> Path:
        """Return the access log ($uri only, no query strings)."""
        return self.prefix / "logs" / "access.log"

    @property
    def error_log(self) -> Path:
        """Return the error log."""
        return self.prefix / "logs" / "error.log"

    def render_config(self) -> str:
        """Return the nginx.conf text for this instance."""
        p = self.prefix
        servers = "\n".join(
            f"        server {self.host}:{port} max_fails=1 fail_timeout={self.fail_timeout_s}s;"
            for port in self.upstream_ports
        )
        connect = f"{max(1, round(self.connect_timeout_s * 1000))}ms"
        read = f"{max(1, round(self.read_timeout_s * 1000))}ms"
        proxy = f"""\
            proxy_pass http://vora_backend;
            proxy_http_version 1.1;
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_read_timeout {read};
            proxy_send_timeout 3600s;
            proxy_connect_timeout {connect};
            proxy_next_upstream error timeout;
            proxy_next_upstream_timeout 10s;"""
        if self.websocket == "refuse":
            blocked = """
        location = /vora/ws {
            return 403;
        }
"""
        elif self.websocket == "strip":
            blocked = f"""
        location = /vora/ws {{
{proxy}
            proxy_set_header Upgrade "";
            proxy_set_header Connection "";
        }}
"""
        else:
            blocked = ""
        listen = f"{self.host}:{self.listen_port}"
        if self.tls is not None:
            cert, key = self.tls
            listen += f" ssl;\n        ssl_certificate {cert};\n        ssl_certificate_key {key}"
        return f"""\
daemon off;
master_process on;
worker_processes 1;
pid {p}/nginx.pid;
error_log {self.error_log} info;

events {{
    worker_connections 512;
}}

http {{
    log_format vora {_LOG_FORMAT};
    access_log {self.access_log} vora;

    client_body_temp_path {p}/temp/client_body;
    proxy_temp_path {p}/temp/proxy;
    fastcgi_temp_path {p}/temp/fastcgi;
    uwsgi_temp_path {p}/temp/uwsgi;
    scgi_temp_path {p}/temp/scgi;

    map $http_upgrade $connection_upgrade {{
        default upgrade;
        ''      close;
    }}

    upstream vora_backend {{
        # Plain round-robin: no ip_hash, hash or sticky, so consecutive requests alternate.
{servers}
    }}

    server {{
        listen {listen};
        server_name _;
{blocked}
        location / {{
{proxy}
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
        }}
    }}
}}
"""

    def _command(self, *extra: str) -> list[str]:
        binary = self._binary or ensure_nginx()
        return [binary, "-p", f"{self.prefix}/", "-c", str(self.config_path), "-e", str(self.error_log), *extra]

    def start(self) -> Self:
        """Write the config, check it with nginx -t, start nginx and wait until the listen port accepts."""
        if self._proc is not None:
            raise RuntimeError("nginx is already running")
        (self.prefix / "logs").mkdir(exist_ok=True)
        (self.prefix / "temp").mkdir(exist_ok=True)
        (self.prefix / "temp").chmod(0o755)
        self.config_path.write_text(self.render_config())
        check = subprocess.run(
            self._command("-t", "-q"), capture_output=True, text=True, timeout=30, check=False, start_new_session=True
        )
        if check.returncode != 0:
            raise RuntimeError(f"nginx rejected its config:\n{check.stdout}{check.stderr}")
        proc = ManagedProcess(self._command(), cwd=self.prefix, log_path=self.prefix / "logs" / "stdout.log")
        proc.start()
        self._proc = proc
        try:
            wait_for(
                lambda: self._pid_file_names(proc.pid) and port_accepts(self.listen_port, self.host),
                self.startup_timeout,
                what=f"nginx to accept on port {self.listen_port}",
                abort=lambda: proc.exit_reason() and f"{proc.exit_reason()}\n{self.error_log_tail()}",
            )
        except BaseException:
            self.stop()
            raise
        return self

    def _pid_file_names(self, pid: int | None) -> bool:
        # nginx writes its pid file after it has bound the listen socket: this tells the port is ours.
        try:
            return pid is not None and (self.prefix / "nginx.pid").read_text().strip() == str(pid)
        except OSError:
            return False

    def error_log_tail(self, lines: int = 30) -> str:
        """Return the last lines of the error log."""
        try:
            return "\n".join(self.error_log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no error log)"

    def access_log_lines(self) -> list[str]:
        """Return the access log's lines (nginx writes them unbuffered, one per finished request)."""
        try:
            return self.access_log.read_text(errors="replace").splitlines()
        except OSError:
            return []

    @property
    def running(self) -> bool:
        """Tell whether nginx was started and has not exited."""
        return self._proc is not None and not self._proc.exited()

    def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT) -> None:
        """Stop nginx (SIGTERM to master and worker, SIGKILL after timeout); the prefix is kept."""
        if self._proc is not None:
            self._proc.stop(timeout)
            self._proc = None

    def close(self) -> None:
        """Stop nginx and remove the prefix if the harness made it."""
        self.stop()
        if self._given_workdir is None and self._prefix is not None:
            shutil.rmtree(self._prefix, ignore_errors=True)
            self._prefix = None


def nginx_or_skip() -> str:
    """Return the nginx binary (apt-get installs it when root and missing), or skip the test when it cannot be had."""
    try:
        return ensure_nginx()
    except NginxUnavailable as exc:
        pytest.skip(f"nginx cannot be had here: {exc}")
