"""Offline checks of the Kubernetes manifests in deploy/: strict schemas, probes, ports, drain, security, server API."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.harness.artefacts import (
    API_PORT,
    GUNICORN_CONF,
    K8S_DIR,
    KUBERNETES_VERSIONS,
    METRICS_PORT,
    SERVER_API_PORT,
    SPEC,
    dockerfile_env,
    dockerfile_uid,
    health_paths,
)
from vora.core.settings import Settings


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
    """The manifests hold a Deployment, a ConfigMap, a policy/v1 PodDisruptionBudget, 3 Services, a NetworkPolicy."""
    kinds = sorted(kind for kind, _ in _resources())
    assert kinds.count("Deployment") == 1
    assert kinds.count("ConfigMap") == 1
    assert kinds.count("PodDisruptionBudget") == 1
    assert kinds.count("Service") == 3
    assert kinds.count("NetworkPolicy") == 1
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
    assert health_paths()["liveness"] == "/vora/health/liveness"
    assert health_paths()["readiness"] == "/vora/health/readiness"


def test_probes_ask_the_health_endpoints_on_the_api_port() -> None:
    """Readiness asks the readiness endpoint, liveness and startup ask the liveness endpoint, all over HTTP on 18085."""
    container = _container()
    expected = {
        "readinessProbe": health_paths()["readiness"],
        "livenessProbe": health_paths()["liveness"],
        "startupProbe": health_paths()["liveness"],
    }
    for probe_name, path in expected.items():
        probe = container[probe_name]["httpGet"]
        assert probe["path"] == path, probe_name
        assert _container_port(probe["port"]) == API_PORT, probe_name
        assert probe.get("scheme", "HTTP") == "HTTP", probe_name


def test_container_declares_the_api_metrics_and_server_api_ports() -> None:
    """The container declares port 18085 named http, port 9102 named metrics and port 18086 named server-api."""
    assert _container_port("http") == API_PORT
    assert _container_port("metrics") == METRICS_PORT
    assert _container_port("server-api") == SERVER_API_PORT == Settings().server_api_port


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
    uid = dockerfile_uid()
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


def _server_api_keys_secret() -> dict[str, Any]:
    (secret,) = _documents(K8S_DIR / "secret-server-api.example.yaml")
    return secret


def _services_targeting(port: int) -> list[dict[str, Any]]:
    return [
        s
        for s in _services()
        if _selects_pods(s["spec"]["selector"])
        and any(_container_port(p.get("targetPort", p["port"])) == port for p in s["spec"]["ports"])
    ]


def test_server_api_is_reachable_only_through_a_cluster_internal_service_of_its_own() -> None:
    """Port 18086 is reached through one ClusterIP Service that maps nothing else, never through the API Service."""
    (service,) = _services_targeting(SERVER_API_PORT)
    spec = service["spec"]
    assert spec.get("type", "ClusterIP") == "ClusterIP"
    assert not spec.get("externalIPs")
    assert [_container_port(p["targetPort"]) for p in spec["ports"]] == [SERVER_API_PORT]
    assert service["metadata"]["name"] != _only("Deployment")["metadata"]["name"]


def test_server_api_keys_come_from_a_mounted_secret_that_can_rotate() -> None:
    """VORA_SERVER_API_KEYS_FILE names a file of the read-only mounted key Secret, not mounted by subPath."""
    env = {e["name"]: e["value"] for e in _container().get("env", [])}
    key_file = Path(env["VORA_SERVER_API_KEYS_FILE"])
    mounts = [m for m in _container()["volumeMounts"] if key_file.parent == Path(m["mountPath"])]
    assert len(mounts) == 1, f"no volume is mounted at {key_file.parent}"
    (mount,) = mounts
    assert mount["readOnly"] is True
    assert "subPath" not in mount, "a subPath mount never sees a rotated Secret"
    volumes = {v["name"]: v for v in _pod_spec()["volumes"]}
    secret = _server_api_keys_secret()
    assert volumes[mount["name"]]["secret"]["secretName"] == secret["metadata"]["name"]
    assert key_file.name in secret["stringData"]
    assert "VORA_SERVER_API_KEYS" not in _config_data()
    assert "VORA_SERVER_API_KEYS_FILE" not in _config_data()


def test_image_listens_on_every_interface_for_the_server_api_only_with_a_key(tmp_path: Path) -> None:
    """With the image's and the ConfigMap's settings the server API binds 0.0.0.0:18086 once a key exists, else not."""
    configured = {**dockerfile_env(), **_config_data(), "VORA_SPEC_DIR": str(SPEC.parent)}
    assert not Settings.from_env(configured).server_api_enabled
    secret = _server_api_keys_secret()
    env = {e["name"]: e["value"] for e in _container()["env"]}
    key_file = tmp_path / Path(env["VORA_SERVER_API_KEYS_FILE"]).name
    key_file.write_text(secret["stringData"][key_file.name])
    settings = Settings.from_env({**configured, "VORA_SERVER_API_KEYS_FILE": str(key_file)})
    assert settings.server_api_enabled
    assert settings.server_api_bind == f"0.0.0.0:{_container_port('server-api')}"


def _admitted_peers(policy: dict[str, Any], port: int) -> list[list[dict[str, Any]]]:
    """Return, for each ingress rule of a policy that admits a container port, its from list ([] admits everyone)."""
    return [
        rule.get("from", [])
        for rule in policy["spec"].get("ingress", [])
        if not rule.get("ports") or any(_container_port(p["port"]) == port for p in rule["ports"])
    ]


def test_network_policy_admits_the_server_api_only_from_the_telephony_platform() -> None:
    """A NetworkPolicy on the VORA pods admits 18086 only from labelled peers, the API and metrics ports as before."""
    policy = _only("NetworkPolicy")
    assert _selects_pods(policy["spec"]["podSelector"]["matchLabels"])
    assert "Ingress" in policy["spec"]["policyTypes"]
    server_api_rules = _admitted_peers(policy, SERVER_API_PORT)
    assert server_api_rules, "no rule admits the server API: the telephony platform could not reach it"
    for peers in server_api_rules:
        assert peers, "a rule admits everyone to the server API"
        for peer in peers:
            assert peer.get("podSelector", {}).get("matchLabels") or "ipBlock" in peer, peer
    for port in (API_PORT, METRICS_PORT):
        assert [] in _admitted_peers(policy, port), f"the policy cuts port {port} off"


MONITORING_DIR = K8S_DIR.parent / "observability" / "kubernetes"
RULE_FILE = K8S_DIR.parent / "observability" / "prometheus" / "vora-rules.yaml"


def _monitoring(kind: str) -> dict[str, Any]:
    docs = [doc for path in sorted(MONITORING_DIR.glob("*.yaml")) for doc in _documents(path) if doc["kind"] == kind]
    assert len(docs) == 1, f"expected one {kind} in {MONITORING_DIR}"
    return docs[0]


def test_monitoring_kustomization_lists_the_service_monitor_and_the_rules() -> None:
    """deploy/observability/kubernetes applies the ServiceMonitor and the PrometheusRule, and nothing else."""
    kustomization = yaml.safe_load((MONITORING_DIR / "kustomization.yaml").read_text())
    listed = sorted(kustomization["resources"])
    assert listed == sorted(p.name for p in MONITORING_DIR.glob("*.yaml") if p.name != "kustomization.yaml")
    kinds = {doc["kind"] for name in listed for doc in _documents(MONITORING_DIR / name)}
    assert kinds == {"ServiceMonitor", "PrometheusRule"}


def test_service_monitor_scrapes_the_metrics_service_alone_as_job_vora() -> None:
    """The ServiceMonitor selects the metrics Service only, scrapes /metrics on its metrics port, as job vora."""
    monitor = _monitoring("ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    spec = monitor["spec"]
    wanted = spec["selector"]["matchLabels"]
    selected = [s for s in _services() if wanted.items() <= s["metadata"].get("labels", {}).items()]
    assert [s["metadata"]["name"] for s in selected] == ["vora-metrics"]
    (service,) = selected
    [endpoint] = spec["endpoints"]
    [port] = [p for p in service["spec"]["ports"] if p.get("name") == endpoint["port"]]
    assert _container_port(port["targetPort"]) == METRICS_PORT
    assert endpoint["path"] == "/metrics"
    assert _seconds(endpoint["scrapeTimeout"]) < _seconds(endpoint["interval"])
    # The rules and the dashboard select job="vora": the job label comes from the Service's label.
    assert service["metadata"]["labels"][spec["jobLabel"]] == "vora"
    rules = RULE_FILE.read_text()
    assert 'job="vora"' in rules
    assert "job=" not in rules.replace('job="vora"', "")


def _seconds(duration: str) -> int:
    assert duration.endswith("s"), duration
    return int(duration[:-1])


def test_prometheus_rule_is_the_tested_rule_file() -> None:
    """The PrometheusRule carries exactly the groups promtool tests in deploy/observability/prometheus."""
    rule = _monitoring("PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["spec"]["groups"] == yaml.safe_load(RULE_FILE.read_text())["groups"]
