"""Run Privoxy as a scanning gateway on loopback: a forward proxy that holds each response's first kilobytes.

A content filter on every URL makes Privoxy read a text/* response into its buffer before it sends
anything, head included. When the buffer passes `buffer-limit`, Privoxy sends what it holds and
passes the rest on as it arrives ("Stepping back from filtering"), as antivirus and DLP gateways
that scan a response's first bytes do. The filter itself matches nothing VORA sends.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from tests.harness.loopback_daemon import LoopbackDaemon

# One filter on every URL: Privoxy reads each text/* body into its buffer to apply it (it matches nothing VORA sends).
_FILTER = "FILTER: scan Read every text body (matches nothing)\ns/@@never@@/x/\n"
STEPPED_BACK = "Stepping back from filtering"  # Privoxy's log line when the held bytes passed the limit


class ScanningProxy(LoopbackDaemon):
    """One Privoxy process that holds the first hold_kib KiB of every text/* response (head included)."""

    name: ClassVar[str] = "privoxy"

    def __init__(self, *, binary: str, hold_kib: int = 8, startup_timeout: float = 10.0) -> None:
        super().__init__(binary=binary, startup_timeout=startup_timeout)
        self.hold_kib = hold_kib

    @property
    def log_path(self) -> Path:
        """Return Privoxy's log (its standard error: in the foreground it logs there)."""
        return self.prefix / "privoxy.log"

    def render_config(self) -> str:
        """Return the Privoxy config text for this instance."""
        return "\n".join(
            [
                f"listen-address {self.host}:{self.port}",
                f"confdir {self.prefix}",
                f"actionsfile {self.prefix / 'scan.action'}",
                f"filterfile {self.prefix / 'scan.filter'}",
                f"buffer-limit {self.hold_kib}",
                "toggle 1",
                "enable-remote-toggle 0",
                "enable-edit-actions 0",
                "debug 1",  # each request
                "debug 4096",  # startup and the buffer limit
                "",
            ]
        )

    def command(self) -> list[str]:
        """Write the config, filter and actions; return Privoxy's foreground command."""
        (self.prefix / "scan.filter").write_text(_FILTER)
        (self.prefix / "scan.action").write_text("{+filter{scan}}\n/\n")
        config = self.prefix / "config"
        config.write_text(self.render_config())
        return [self.binary, "--no-daemon", str(config)]
