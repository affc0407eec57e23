"""`make fuzz`: schemathesis with every check against a VORA QA names, or one started here on loopback.

Targets (each also read from the environment variable in brackets):
  --url URL [FUZZ_URL]                  the REST API's base URL, e.g. http://127.0.0.1:18085/vora
  --token TOKEN [FUZZ_TOKEN]            an access token for it, or client credentials to get one:
  --token-url, --client-id, --client-secret [FUZZ_TOKEN_URL, FUZZ_CLIENT_ID, FUZZ_CLIENT_SECRET]
  --server-url URL [FUZZ_SERVER_URL]    the server API's base URL, with
  --server-key KEY [FUZZ_SERVER_KEY]    a server API key (both, or neither: no server API)
Without --url, a VORA is started here: a redis-server, real gunicorn, a fresh signing key, a token minted
with it for a user owning identities, and a server API key (--keep keeps it running after the run, for
replaying the curl lines). Reports go to --report-dir (JUnit XML, an HTML report and the printed output per
document, and summary.md with the command that replays the run). Exit 0 clean, 1 findings or errors, 2 a
document schemathesis could not run, 124 out of time (docs/qa.md).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from testbed.redis_procs import RedisServer
from testbed.vora_server import running_server
from vora.auth.devkeys import create_dev_key, mint_token
from vora.store.directory import Directory

REPO = Path(__file__).resolve().parent.parent
SPEC_DIR = REPO / "spec"
DEFAULT_REPORT_DIR = REPO / "build" / "fuzz"
# Loaded by schemathesis itself (SCHEMATHESIS_HOOKS): drops the false findings it makes (docs/qa.md).
HOOKS_FILE = REPO / "testbed" / "schemathesis_hooks.py"
QA_USER = "qa"
QA_IDENTITIES = ("910111000", "602128708", "A")
ISSUER = "vora-fuzz"
AUDIENCE = "vora"
# Exit codes: schemathesis' own 1 (checks failed) and 2 (could not run), and the shell's 124 for a timeout.
FINDINGS = 1
NOT_RUN = 2
TIMED_OUT = 124


@dataclass(frozen=True)
class Target:
    """One document to fuzz: where it is served and the Authorization header to send."""

    name: str
    document: Path
    base_url: str
    authorization: str
    secret: str  # what must never appear in a report we print
    # Checks that misread this document, each with its reason in docs/qa.md.
    excluded_checks: tuple[str, ...] = ()


@dataclass(frozen=True)
class Outcome:
    """What schemathesis said about one target."""

    target: Target
    exit_code: int
    tests: int
    failures: int
    errors: int
    seconds: float
    report_dir: Path


def client_credentials_token(token_url: str, client_id: str, client_secret: str) -> str:
    """Get an access token with the OAuth2 client credentials grant."""
    body = urllib.parse.urlencode({"grant_type": "client_credentials", "scope": "scope.vora.identities"}).encode()
    request = urllib.request.Request(token_url, data=body, method="POST")  # noqa: S310 - the URL QA names
    request.add_header("Content-Type", "application/x-www-form-urlencoded")
    basic = f"{urllib.parse.quote(client_id)}:{urllib.parse.quote(client_secret)}"
    request.add_header("Authorization", "Basic " + base64.b64encode(basic.encode()).decode())
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - the URL QA names
        token: str = json.load(response)["access_token"]
    return token


@contextlib.contextmanager
def local_vora(work: Path) -> Iterator[list[Target]]:
    """Start redis-server and VORA (gunicorn, two gevent workers, server API on) on loopback; yield its targets."""
    key_path = work / "dev-key.pem"
    create_dev_key(key_path)
    server_key = secrets.token_urlsafe(32)
    with RedisServer(workdir=work / "redis") as redis_server:
        # Provisioned as the telephony side does: the directory is marked provisioned, so a stranger's setup is 404.
        Directory(redis_server.client()).add(QA_USER, list(QA_IDENTITIES))
        env = {
            "VORA_REDIS_URL": redis_server.url,
            "VORA_DEV_KEY": str(key_path),
            "VORA_OAUTH_ISSUER": ISSUER,
            "VORA_OAUTH_AUDIENCE": AUDIENCE,
            "VORA_SERVER_API_KEYS": server_key,
            # One QA user makes hundreds of setups: with the production limits (30 a minute) most would be
            # 429 and the stateful phase would rarely get past setup. The limits have tests of their own.
            "VORA_SETUP_RATE_PER_USER": "0",
            "VORA_SETUP_RATE_PER_IDENTITY": "0",
        }
        with running_server(env, work, workers=2) as server:
            token = mint_token(key_path.read_bytes(), QA_USER, ISSUER, AUDIENCE, lifetime=3600)
            print(f"started VORA at {server.base_url} (log {server.log_path}), Redis at {redis_server.url}")
            yield [
                Target("vora", SPEC_DIR / "vora.yaml", server.base_url, f"Bearer {token}", token),
                server_api_target(server.server_api_url, server_key),
            ]


def named_targets(args: argparse.Namespace) -> list[Target]:
    """Build the targets QA named on the command line or in the environment."""
    token = args.token
    if not token and args.client_id:
        if not (args.token_url and args.client_secret):
            raise SystemExit("--client-id needs --token-url and --client-secret")
        token = client_credentials_token(args.token_url, args.client_id, args.client_secret)
    if not token:
        # FUZZ_TOKEN="$(...)" whose command failed arrives here empty: say that, not only what is missing.
        raise SystemExit(
            "--url needs --token (FUZZ_TOKEN, empty here), or --token-url with --client-id and --client-secret"
        )
    if bool(args.server_url) != bool(args.server_key):
        # Half of the pair used to skip the server API without a word, so a run looked complete.
        raise SystemExit("--server-url and --server-key (FUZZ_SERVER_URL, FUZZ_SERVER_KEY) go together; one is empty")
    for name, secret in (("token", token), ("server key", args.server_key)):
        if secret != secret.strip() or "\n" in secret:
            # `$(cat .vora/server-api.key)` carries the file's comment line; schemathesis only says
            # "Invalid return character or leading space in header".
            raise SystemExit(
                f"the {name} has spaces or more than one line; give one key, e.g. "
                "$(grep -v '^#' .vora/server-api.key | head -1)"
            )
    targets = [Target("vora", SPEC_DIR / "vora.yaml", args.url.rstrip("/"), f"Bearer {token}", token)]
    if args.server_url:
        targets.append(server_api_target(args.server_url.rstrip("/"), args.server_key))
    return targets


def server_api_target(base_url: str, key: str) -> Target:
    """Describe the server API document served at base_url, called with a server API key."""
    # DELETE /identities/{identity}/sessions ends the sessions; the collection stays and its GET rightly
    # answers 200 with an empty list, which use_after_free reads as a deleted resource (docs/qa.md).
    return Target("vora-server", SPEC_DIR / "vora-server.yaml", base_url, f"Bearer {key}", key, ("use_after_free",))


def run_schemathesis(target: Target, args: argparse.Namespace, report_dir: Path) -> Outcome:
    """Run schemathesis with every check on the data and phases asked for; keep its reports."""
    report_dir.mkdir(parents=True, exist_ok=True)
    junit = report_dir / "junit.xml"
    argv = [
        str(Path(sys.executable).parent / "schemathesis"),
        "run",
        str(target.document),
        "--url",
        target.base_url,
        "--checks",
        "all",
        *(["--exclude-checks", ",".join(target.excluded_checks)] if target.excluded_checks else []),
        "--mode",
        args.mode,
        "--phases",
        args.phases,
        "--header",
        f"Authorization: {target.authorization}",
        "--max-examples",
        str(args.max_examples),
        "--seed",
        str(args.seed),
        "--generation-database",
        "none",
        "--workers",
        str(args.workers),
        "--request-timeout",
        "10",
        "--no-color",
        "--report",
        "junit,html",
        "--report-dir",
        str(report_dir),
        "--report-junit-path",
        str(junit),
    ]
    started = time.monotonic()
    code = stream(argv, report_dir, target.secret, args.timeout)
    seconds = time.monotonic() - started
    tests = failures = errors = 0
    # A schemathesis stopped by the timeout leaves its JUnit file empty or cut short.
    if junit.is_file() and code != TIMED_OUT:
        root = ET.parse(junit).getroot()  # noqa: S314 - schemathesis' own report, written just now
        for suite in root.iter("testsuite"):
            tests += int(suite.get("tests", 0))
            failures += int(suite.get("failures", 0))
            errors += int(suite.get("errors", 0))
    return Outcome(target, code, tests, failures, errors, seconds, report_dir)


def stream(argv: list[str], report_dir: Path, secret: str, timeout: float) -> int:
    """Run schemathesis, printing and keeping its output as it comes (secret redacted); its exit code, or 124."""
    # Printed as it comes, not at the end: a run of several minutes showed nothing until it was over, and a
    # run stopped by Ctrl-C kept nothing of what it had printed.
    with (report_dir / "output.txt").open("w") as kept:
        process = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=report_dir,
            env={**os.environ, "SCHEMATHESIS_HOOKS": str(HOOKS_FILE), "PYTHONUNBUFFERED": "1"},
        )
        assert process.stdout is not None

        def copy(lines: IO[str]) -> None:
            for line in lines:
                redacted = line.replace(secret, "<redacted>")
                print(redacted, end="", flush=True)
                kept.write(redacted)

        copier = threading.Thread(target=copy, args=(process.stdout,), daemon=True)
        copier.start()
        try:
            code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            code = TIMED_OUT
        copier.join(timeout=10)
        if code == TIMED_OUT:
            note = f"\nstopped after {timeout:g} s (--timeout): this document was not fuzzed to the end\n"
            print(note, end="")
            kept.write(note)
    return code


def verdict(outcome: Outcome) -> str:
    """Say in a few words what one document's run came to."""
    if outcome.exit_code == 0:
        return "clean"
    if outcome.exit_code == FINDINGS and outcome.errors and not outcome.failures:
        # Network errors (VORA unreachable, timed out) and schemathesis' own errors are JUnit errors, not failures.
        return "ERRORS (exit 1): requests failed or schemathesis erred, see the output"
    if outcome.exit_code == FINDINGS:
        return "FINDINGS (exit 1)"
    if outcome.exit_code == TIMED_OUT:
        return f"TIMED OUT after {outcome.seconds:.0f} s (exit 124): incomplete"
    return f"NOT RUN (schemathesis exit {outcome.exit_code}): see its output"


def exit_code(outcomes: list[Outcome]) -> int:
    """Exit 1 on any finding, else 2 when a document could not be fuzzed, else 124 when one ran out of time, else 0."""
    codes = {o.exit_code for o in outcomes}
    if FINDINGS in codes:
        return FINDINGS
    if codes - {0, TIMED_OUT}:
        return NOT_RUN
    return TIMED_OUT if TIMED_OUT in codes else 0


def replay_command(args: argparse.Namespace) -> str:
    """Return the make fuzz command that generates this run's requests again (credentials left out)."""
    options = [
        f"--seed {args.seed}",
        f"--mode {args.mode}",
        f"--max-examples {args.max_examples}",
        f"--phases {args.phases}",
        f"--workers {args.workers}",
    ]
    if args.url:
        options.insert(0, f"--url {args.url}")
        if args.server_url:
            options.insert(1, f"--server-url {args.server_url}")
    return f'make fuzz FUZZ_ARGS="{" ".join(options)}"'


def summary(outcomes: list[Outcome], args: argparse.Namespace) -> str:
    """Write the readable summary: one row per document, how to replay the run, and where each report is."""
    data = {"all": "positive and negative data", "positive": "positive data", "negative": "negative data"}[args.mode]
    lines = [
        "# VORA fuzzing summary",
        "",
        f"schemathesis, every check, {data}, phases {args.phases}, {args.max_examples} examples per operation "
        f"and phase, {args.workers} worker(s), seed {args.seed}.",
        "",
        "| document | base URL | JUnit cases | failed | errors | seconds | result |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for o in outcomes:
        lines.append(
            f"| {o.target.document.name} | {o.target.base_url} | {o.tests} | {o.failures} | {o.errors} "
            f"| {o.seconds:.0f} | {verdict(o)} |"
        )
    code = exit_code(outcomes)
    meaning = {
        0: "clean",
        FINDINGS: "findings or errors",
        NOT_RUN: "a document could not be fuzzed",
        TIMED_OUT: "incomplete",
    }
    # make itself exits 2 whatever the recipe's code was: this line keeps python -m fuzz's own.
    lines += ["", f"python -m fuzz exit code: {code} ({meaning[code]})."]
    lines += ["", "Replay (the same requests, given the same server state; docs/qa.md, Replaying):", ""]
    lines += [f"    {replay_command(args)}", ""]
    lines += ["Reports (JUnit XML, HTML, the printed output):", ""]
    lines += [f"- {o.target.name}: {o.report_dir}" for o in outcomes]
    return "\n".join(lines) + "\n"


def hold(targets: list[Target], env_file: Path) -> None:
    """Keep the VORA started here serving until Ctrl-C, its URLs and credentials in env_file for the replays."""
    # The token and key only exist for this VORA, which is gone when the run ends: without it a reproduction's
    # curl line has nothing to reach.
    rest, server = targets
    env_file.touch(mode=0o600)
    env_file.write_text(
        f"FUZZ_URL={rest.base_url}\nFUZZ_TOKEN={rest.secret}\n"
        f"FUZZ_SERVER_URL={server.base_url}\nFUZZ_SERVER_KEY={server.secret}\n"
    )
    print(
        f"VORA keeps running (--keep) until Ctrl-C. To replay a curl line of the output, in another terminal:\n\n"
        f"    set -a; . {env_file}; set +a\n"
        f"    and replace -H 'Authorization: [Filtered]' with -H \"Authorization: Bearer $FUZZ_TOKEN\"\n"
        f'    (-H "Authorization: Bearer $FUZZ_SERVER_KEY" for the server API); docs/qa.md, Replaying.\n',
        flush=True,
    )

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # `kill` stops it as Ctrl-C does: VORA and Redis are stopped and the temporary directory removed.
    signal.signal(signal.SIGTERM, stop)
    with contextlib.suppress(KeyboardInterrupt):
        while True:
            time.sleep(3600)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """Read the command line, with FUZZ_* variables as defaults."""
    env = os.environ.get
    parser = argparse.ArgumentParser(
        prog="make fuzz", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--url", default=env("FUZZ_URL", ""))
    parser.add_argument("--token", default=env("FUZZ_TOKEN", ""))
    parser.add_argument("--token-url", default=env("FUZZ_TOKEN_URL", ""))
    parser.add_argument("--client-id", default=env("FUZZ_CLIENT_ID", ""))
    parser.add_argument("--client-secret", default=env("FUZZ_CLIENT_SECRET", ""))
    parser.add_argument("--server-url", default=env("FUZZ_SERVER_URL", ""))
    parser.add_argument("--server-key", default=env("FUZZ_SERVER_KEY", ""))
    parser.add_argument("--max-examples", type=int, default=int(env("FUZZ_MAX_EXAMPLES", "100")))
    parser.add_argument("--seed", type=int, default=int(env("FUZZ_SEED", str(int(time.time())))))
    parser.add_argument("--mode", choices=("all", "positive", "negative"), default=env("FUZZ_MODE", "all"))
    parser.add_argument("--workers", type=int, default=int(env("FUZZ_WORKERS", "2")))
    parser.add_argument("--phases", default=env("FUZZ_PHASES", "examples,coverage,fuzzing,stateful"))
    parser.add_argument("--timeout", type=float, default=float(env("FUZZ_TIMEOUT", "300")), help="seconds per document")
    parser.add_argument("--report-dir", type=Path, default=Path(env("FUZZ_REPORT_DIR", str(DEFAULT_REPORT_DIR))))
    parser.add_argument(
        "--keep",
        action="store_true",
        default=env("FUZZ_KEEP", "") not in ("", "0"),
        help="keep the VORA started here running after the run, for replaying its curl lines, until Ctrl-C",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Fuzz each target, print and write the summary, and exit as exit_code says."""
    args = parse(argv)
    run_dir = args.report_dir / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    run_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        if args.url:
            targets = named_targets(args)
        else:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="vora-fuzz-")))
            targets = stack.enter_context(local_vora(work))
        outcomes = [run_schemathesis(target, args, run_dir / target.name) for target in targets]
        text = summary(outcomes, args)
        (run_dir / "summary.md").write_text(text)
        print(text)
        if args.keep and not args.url:
            hold(targets, run_dir / "replay.env")
        elif args.keep:
            print("--keep (FUZZ_KEEP) keeps only a VORA make fuzz started; the one at --url is yours to keep")
    return exit_code(outcomes)


if __name__ == "__main__":
    raise SystemExit(main())
