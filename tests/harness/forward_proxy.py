"""Run tinyproxy as a corporate forward proxy on loopback: CONNECT to any port, absolute-form GETs, Basic auth."""

from __future__ import annotations

import re
from pathlib import Path
from typing import ClassVar

from tests.harness.loopback_daemon import LoopbackDaemon

# At LogLevel Connect tinyproxy logs each request line: "Request (file descriptor 7): CONNECT host:port HTTP/1.1".
_REQUEST = re.compile(r"Request \(file descriptor \d+\): (?P<method>[A-Z]+) (?P<target>\S+)")


class ForwardProxy(LoopbackDaemon):
    """One tinyproxy process: an explicit HTTP proxy that tunnels with CONNECT (to any port) and forwards plain GETs.

    With credentials it answers 407 to every request without `Proxy-Authorization: Basic` for them.
    """

    name: ClassVar[str] = "tinyproxy"

    def __init__(
        self,
        *,
        binary: str,
        credentials: tuple[str, str] | None = None,
        connect_ports: tuple[int, ...] = (),
        startup_timeout: float = 10.0,
        workdir: Path | None = None,
    ) -> None:
        super().__init__(binary=binary, startup_timeout=startup_timeout, workdir=workdir)
        self.credentials = credentials
        self.connect_ports = connect_ports  # empty: CONNECT to any port (tinyproxy's rule when none is listed)

    @property
    def url_with_credentials(self) -> str:
        """Return the proxy URL with its user and password (user:password@)."""
        if self.credentials is None:
            return self.url
        user, password = self.credentials
        return f"http://{user}:{password}@{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        """Return tinyproxy's log file."""
        return self.prefix / "tinyproxy.log"

    @property
    def output_path(self) -> Path:
        """Return where tinyproxy's own output goes (it logs to log_path)."""
        return self.prefix / "out.log"

    def render_config(self) -> str:
        """Return the tinyproxy.conf text for this instance."""
        lines = [
            f"Port {self.port}",
            f"Listen {self.host}",
            "Timeout 600",
            f'LogFile "{self.log_path}"',
            "LogLevel Connect",
            f'PidFile "{self.prefix / "tinyproxy.pid"}"',
            "MaxClients 200",
            f"Allow {self.host}",
            "DisableViaHeader Yes",
            *(f"ConnectPort {port}" for port in self.connect_ports),
        ]
        if self.credentials is not None:
            lines.append("BasicAuth {} {}".format(*self.credentials))
        return "\n".join(lines) + "\n"

    def command(self) -> list[str]:
        """Write tinyproxy.conf; return tinyproxy's foreground command."""
        config = self.prefix / "tinyproxy.conf"
        config.write_text(self.render_config())
        return [self.binary, "-d", "-c", str(config)]

    def requests(self) -> list[tuple[str, str]]:
        """Return (method, target) of every request the proxy received, in order: CONNECT host:port, GET URL."""
        found = (_REQUEST.search(line) for line in self.log_lines())
        return [(match["method"], match["target"]) for match in found if match is not None]

    def tunnels_to(self, port: int) -> int:
        """Count the CONNECT requests to port on loopback."""
        return sum(1 for method, target in self.requests() if method == "CONNECT" and target == f"{self.host}:{port}")

    def forwards(self, url_prefix: str) -> int:
        """Count the forwarded (absolute-form) requests whose URL starts with url_prefix."""
        return sum(1 for method, target in self.requests() if method != "CONNECT" and target.startswith(url_prefix))
