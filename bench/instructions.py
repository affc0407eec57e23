"""Count the CPU instructions VORA and the baseline app spend per REST request, under valgrind's cachegrind.

`python -m bench.instructions` starts a redis-server of its own on a free loopback port, provisions
the users of scenario 1, mints real access tokens, then runs one child process per count under
`valgrind --tool=cachegrind`: the child builds the app as gunicorn's worker does (gevent-patched,
Prometheus in multiprocess mode, VORA's JSON logs into a file, `gc.freeze()` after start-up),
serves WARMUP requests of every operation, then N of one operation, calling the WSGI app in-process.
Each count is the run with N requests minus the run with none, divided by N: start-up, the warm-up
and the interpreter's exit cancel out. No load generator and no socket to the app: the figure is
the app's own work per request (Redis' is in its own process, gunicorn's is common to both apps).
The children run under `nice` so that they disturb the machine's other work as little as possible.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
APPS = ("vora", "baseline")
OPERATIONS = ("get_identity", "setup")
GET_USER = "bench-rest"
GET_IDENTITIES = ["602128708", "910111000"]
SETUP_USER = "bench-setup"
SETUP_IDENTITIES = [f"7100{n:05d}" for n in range(100)]
DEFAULT_REQUESTS = 1000  # the start-up left in both runs differs by a few million instructions: spread it thin
WARMUP = 30
# Setups before any count: each identity then holds its user's cap of sessions (5), so every counted setup
# evicts one, as in scenario 1's steady state, in the run with N requests and in the one with none alike.
PRIME_SETUPS = 600
_SUMMARY = re.compile(rb"^summary:\s+(\d+)", re.MULTILINE)

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


@dataclass(frozen=True)
class Request:
    """One request as the child sends it: method, path, headers and the bodies it rotates over."""

    method: str
    path: str
    headers: dict[str, str]
    bodies: tuple[bytes, ...]


def requests_of(tokens: dict[str, str]) -> dict[str, Request]:
    """Build scenario 1's two requests, each with the access token of its user."""
    setup_bodies = tuple(
        json.dumps({"connectionType": "WebSocket", "identity": identity}).encode() for identity in SETUP_IDENTITIES
    )
    return {
        "get_identity": Request("GET", "/vora/identity", {"Authorization": f"Bearer {tokens['get_identity']}"}, (b"",)),
        "setup": Request(
            "POST",
            "/vora/identity/setup",
            {"Authorization": f"Bearer {tokens['setup']}", "Content-Type": "application/json"},
            setup_bodies,
        ),
    }


class Caller:
    """Call a WSGI app in-process with one request, rotating over its bodies, as a server would."""

    def __init__(self, app: WsgiApp, request: Request) -> None:
        from werkzeug.test import EnvironBuilder

        self._app = app
        self._bodies = request.bodies
        self._next = 0
        builder = EnvironBuilder(
            path=request.path,
            method=request.method,
            headers=list(request.headers.items()),
            data=request.bodies[0] or None,
        )
        self._environ = builder.get_environ()
        self._environ.update({"SERVER_SOFTWARE": "gunicorn/23.0.0", "REMOTE_ADDR": "127.0.0.1", "REMOTE_PORT": "50000"})
        self.status = ""

    def _start_response(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[..., Any]:
        self.status = status
        return self._write

    def _write(self, data: bytes) -> None:
        raise RuntimeError("the app used the WSGI write() callable")

    def __call__(self) -> bytes:
        """Serve the request once and return its body; raise unless it answered 200."""
        body = self._bodies[self._next % len(self._bodies)]
        self._next += 1
        environ = dict(self._environ)
        environ["wsgi.input"] = io.BytesIO(body)
        result = self._app(environ, self._start_response)
        try:
            payload = b"".join(result)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        if not self.status.startswith("200"):
            where = f"{environ['REQUEST_METHOD']} {environ['PATH_INFO']}"
            raise RuntimeError(f"{where} answered {self.status}: {payload!r}")
        return payload


def build_app(app_name: str) -> WsgiApp:
    """Build one app the way its gunicorn worker does, from the environment the parent set."""
    import gc

    if app_name == "vora":
        from vora.wsgi import app_from_env

        app: WsgiApp = app_from_env()
    else:
        from bench.baseline_app import create_app

        app = create_app()
    # As vora.gunicorn_conf.post_worker_init does (and as the baseline's worker would gain nothing from).
    gc.collect()
    gc.freeze()
    return app


def child(app_name: str, operation: str, count: int, tokens: dict[str, str]) -> None:
    """Serve WARMUP requests of every operation, then count of one, in this process."""
    from gevent import monkey

    monkey.patch_all()  # as gunicorn's gevent worker does before it loads the app
    app = build_app(app_name)
    callers = {name: Caller(app, request) for name, request in requests_of(tokens).items()}
    for _ in range(WARMUP):
        for caller in callers.values():
            caller()
    measured = callers[operation]
    for _ in range(count):
        measured()
    # Skip the interpreter's teardown: it adds nothing to measure, only noise to subtract.
    sys.stderr.flush()
    os._exit(0)


def instructions(command: list[str], env: dict[str, str], workdir: Path, name: str) -> int:
    """Run a command under cachegrind and return the instructions it executed."""
    out = workdir / f"{name}.cachegrind"
    log = workdir / f"{name}.valgrind.log"
    stderr = workdir / f"{name}.stderr"
    argv = [
        "nice",
        "-n",
        "19",
        "valgrind",
        "--tool=cachegrind",
        "--cache-sim=no",
        f"--cachegrind-out-file={out}",
        f"--log-file={log}",
        *command,
    ]
    with stderr.open("wb") as errors:
        completed = subprocess.run(argv, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=errors, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"{name} exited {completed.returncode}:\n{stderr.read_text()[-3000:]}")
    found = _SUMMARY.search(out.read_bytes())
    if found is None:
        raise RuntimeError(f"{out} has no summary line")
    return int(found.group(1))


@contextlib.contextmanager
def environment(workdir: Path) -> Iterator[tuple[dict[str, str], dict[str, str]]]:
    """Start Redis, provision scenario 1's users and mint their tokens; yield the children's env and tokens."""
    from bench.context import UNREFUSING_SETUP_RATE
    from tests.harness.redis_procs import RedisServer
    from vora.devkeys import create_dev_key, mint_token
    from vora.settings import Settings
    from vora.store.directory import Directory

    dev_key = workdir / "dev-key.pem"
    create_dev_key(dev_key)
    pem = dev_key.read_bytes()
    defaults = Settings()
    metrics_dir = workdir / "metrics"
    metrics_dir.mkdir()
    with contextlib.closing(RedisServer(workdir=workdir / "redis").start()) as server:
        client = server.client(decode_responses=False)
        directory = Directory(client)
        directory.add(GET_USER, GET_IDENTITIES)
        directory.add(SETUP_USER, SETUP_IDENTITIES)
        client.close()
        tokens = {
            "get_identity": mint_token(pem, GET_USER, defaults.oauth_issuer, defaults.oauth_audience),
            "setup": mint_token(pem, SETUP_USER, defaults.oauth_issuer, defaults.oauth_audience),
        }
        env = {
            **os.environ,
            "PYTHONHASHSEED": "0",  # the same dict and set layouts in every child
            "VORA_REDIS_URL": server.url,
            "VORA_DEV_KEY": str(dev_key),
            **UNREFUSING_SETUP_RATE,
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),  # as the gunicorn master sets it for its workers
            "BENCH_REDIS_URL": server.url,
            "BENCH_IDENTITIES": ",".join(GET_IDENTITIES),
        }
        yield env, tokens


def measure(
    apps: Iterable[str], operations: Iterable[str], count: int, workdir: Path, repeat: int = 1
) -> dict[str, dict[str, int]]:
    """Return the instructions per request of each app and operation, each run the fewest of `repeat`."""
    results: dict[str, dict[str, int]] = {}
    with environment(workdir) as (env, tokens):
        child_env = {**env, "BENCH_INSTRUCTION_TOKENS": json.dumps(tokens)}
        prime = [sys.executable, "-m", "bench.instructions", "--child", "vora", "setup", str(PRIME_SETUPS)]
        subprocess.run(prime, env=child_env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        for app_name in apps:
            base: int | None = None
            for operation in operations:

                def run(n: int, operation: str = operation, app_name: str = app_name) -> int:
                    # The fewest: a run can only gain instructions (a reply not there yet sends gevent to its hub).
                    command = [sys.executable, "-m", "bench.instructions", "--child", app_name, operation, str(n)]
                    return min(
                        instructions(command, child_env, workdir, f"{app_name}-{operation}-{n}-{i}")
                        for i in range(repeat)
                    )

                if base is None:
                    base = run(0)  # no measured request: the same for every operation of one app
                total = run(count)
                results.setdefault(app_name, {})[operation] = round((total - base) / count)
    return results


def report(results: dict[str, dict[str, int]]) -> str:
    """Format the counts as a table, with VORA's ratio to the baseline where both were measured."""
    lines = [f"{'operation':<14}{'app':<10}{'instructions/request':>22}{'x baseline':>12}"]
    for operation in OPERATIONS:
        baseline = results.get("baseline", {}).get(operation)
        for app_name in APPS:
            value = results.get(app_name, {}).get(operation)
            if value is None:
                continue
            ratio = f"{value / baseline:.2f}" if baseline and app_name != "baseline" else ""
            lines.append(f"{operation:<14}{app_name:<10}{value:>22,}{ratio:>12}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Measure and print instructions per request, or serve as a measured child."""
    parser = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=DEFAULT_REQUESTS, help="measured requests per count")
    parser.add_argument("--apps", default=",".join(APPS), help="comma-separated: vora, baseline")
    parser.add_argument("--operations", default=",".join(OPERATIONS), help="comma-separated: get_identity, setup")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each count, the fewest instructions kept")
    parser.add_argument("--json", action="store_true", help="print the counts as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (cachegrind files, logs)")
    parser.add_argument("--child", nargs=3, metavar=("APP", "OPERATION", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        app_name, operation, n = args.child
        child(app_name, operation, int(n), json.loads(os.environ["BENCH_INSTRUCTION_TOKENS"]))
        return 0
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (apt-get install -y valgrind)", file=sys.stderr)
        return 2
    apps = [a for a in args.apps.split(",") if a]
    operations = [o for o in args.operations.split(",") if o]
    unknown = sorted(set(apps) - set(APPS)) + sorted(set(operations) - set(OPERATIONS))
    if unknown or args.requests < 1 or args.repeat < 1:
        parser.error(f"unknown app or operation {unknown}, or --requests or --repeat below 1")
    workdir = Path(tempfile.mkdtemp(prefix="vora-instructions-"))
    try:
        results = measure(apps, operations, args.requests, workdir, args.repeat)
    finally:
        if args.keep:
            print(f"work directory kept: {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(results, indent=2) if args.json else report(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
