"""Wait until a URL answers a 2xx, or fail when the process that should serve it exits first.

usage: await_http.py NAME URL PID [SECONDS]
"""

from __future__ import annotations

import os
import sys
import time
import urllib.error
import urllib.request

_POLL_SECONDS = 0.1


def alive(pid: int) -> bool:
    """Tell whether the process still runs (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True  # no /proc: trust the signal


def main(argv: list[str]) -> int:
    """Poll the URL until it answers, the process exits or the time is up."""
    if len(argv) not in {3, 4}:
        print(__doc__, file=sys.stderr)
        return 2
    name, url, pid = argv[0], argv[1], int(argv[2])
    deadline = time.monotonic() + (float(argv[3]) if len(argv) == 4 else 60.0)
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - a loopback URL of make run's
                if 200 <= response.status < 300:
                    return 0
                last = f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}: {exc.read(300).decode(errors='replace')}"
        except OSError as exc:
            last = str(exc)
        if not alive(pid):
            print(f"make run: {name} exited before it answered at {url}; see its output above", file=sys.stderr)
            return 1
        time.sleep(_POLL_SECONDS)
    print(f"make run: {name} did not answer at {url} in time (last: {last})", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
