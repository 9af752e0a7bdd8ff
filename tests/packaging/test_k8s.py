"""Static checks of the Kubernetes example (deploy/k8s): the manifests against each other and
against the code they describe (routes, settings, metrics, the image). No cluster runs here;
where kubectl is installed, kustomize renders the folder too."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
API_VERSIONS = {
    "Deployment": "apps/v1",
    "Service": "v1",
    "HorizontalPodAutoscaler": "autoscaling/v2",
    "PodDisruptionBudget": "policy/v1",
}


@pytest.fixture(scope="module")
def manifests() -> dict[str, dict]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    found = {}
    for name in kustomization["resources"]:
        for doc in yaml.safe_load_all((K8S / name).read_text()):
            assert doc["kind"] not in found, f"two {doc['kind']}s"
            found[doc["kind"]] = doc
    return found


@pytest.fixture(scope="module")
def pod(manifests) -> dict:
    return manifests["Deployment"]["spec"]["template"]


def container(pod: dict, name: str, init: bool = False) -> dict:
    (found,) = [c for c in pod["spec"]["initContainers" if init else "containers"] if c["name"] == name]
    return found


def env(c: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in c.get("env", [])}


def test_every_manifest_is_listed_and_well_formed(manifests):
    listed = set(yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", "prometheus-adapter-values.yaml"}
    assert listed == on_disk
    assert set(manifests) == set(API_VERSIONS)
    for kind, doc in manifests.items():
        assert doc["apiVersion"] == API_VERSIONS[kind], kind
        assert doc["metadata"]["name"] == "dat-serve"
        assert doc["metadata"]["labels"]["app.kubernetes.io/name"] == "dat-serve"


def test_selectors_match_the_pods(manifests, pod):
    labels = pod["metadata"]["labels"]
    deployment, service, pdb = manifests["Deployment"], manifests["Service"], manifests["PodDisruptionBudget"]
    for selector in (
        deployment["spec"]["selector"]["matchLabels"],
        service["spec"]["selector"],
        pdb["spec"]["selector"]["matchLabels"],
    ):
        assert selector and selector.items() <= labels.items()
    target = manifests["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == ("apps/v1", "Deployment", "dat-serve")


def test_ports_are_consistent(manifests, pod):
    server = container(pod, "server")
    (port,) = server["ports"]
    assert port == {"name": "http", "containerPort": 8000, "protocol": "TCP"}
    assert int(env(server)["DAT_PORT"]) == 8000 and env(server)["DAT_HOST"] == "0.0.0.0"
    (service_port,) = manifests["Service"]["spec"]["ports"]
    assert service_port["targetPort"] in ("http", 8000)
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == "8000"
    assert pod["metadata"]["annotations"]["prometheus.io/path"] == "/metrics"


def test_probes_use_routes_the_server_has(pod):
    from service import Settings, create_app

    routes = {
        path for path, operations in create_app(Settings()).openapi()["paths"].items() if "get" in operations
    }
    server = container(pod, "server")
    probes = {kind: server[kind]["httpGet"] for kind in ("startupProbe", "readinessProbe", "livenessProbe")}
    for kind, probe in probes.items():
        assert probe["path"] in routes, (kind, probe["path"])
        assert probe["port"] in ("http", 8000)
    assert probes["readinessProbe"]["path"].endswith("/health/ready")  # 503 while loading / draining
    assert probes["livenessProbe"]["path"] == "/health/live"  # 200 during loading: never restarts it
    startup = server["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120  # room to load and warm up
    assert "/metrics" in routes


def test_gpu_settings_and_graceful_shutdown(pod):
    from service.settings import Settings

    fields = {f"DAT_{name.upper()}" for name in Settings.model_fields}
    server = container(pod, "server")
    settings = env(server)
    unknown = {name for name in settings if name.startswith("DAT_")} - fields
    assert not unknown, f"the server ignores {sorted(unknown)}"
    assert server["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert settings["DAT_DEVICE"] == "cuda" and settings["DAT_ARTIFACTS"] == "/artifacts/current"
    # the export writes what the server reads, for the same batch range
    export = container(pod, "export", init=True)
    script = (REPO / "docker" / "export.sh").read_text()
    assert export["command"] == ["bash", "/app/docker/export.sh"]
    for name in env(export):
        assert name.startswith("XDG_") or name in script, f"export.sh does not read {name}"
    assert env(export)["DAT_ARTIFACTS"] == settings["DAT_ARTIFACTS"]
    assert env(export)["DAT_MODEL"] == settings["DAT_MODEL"]
    assert env(export)["DAT_EXPORT_MAX_BATCH"] == settings["DAT_MAX_BATCH_SIZE"]
    assert export["resources"]["limits"]["nvidia.com/gpu"] == 1
    # SIGTERM comes after preStop; queued and running requests then get DAT_SHUTDOWN_TIMEOUT_S
    pre_stop = server["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    budget = int(pre_stop[1]) + float(settings["DAT_SHUTDOWN_TIMEOUT_S"])
    assert pod["spec"]["terminationGracePeriodSeconds"] > budget


def test_pods_run_as_the_images_non_root_user(pod):
    dockerfile = (REPO / "Dockerfile").read_text()
    users = set(re.findall(r"^USER (\S+)", dockerfile, re.MULTILINE))
    security = pod["spec"]["securityContext"]
    assert security["runAsNonRoot"] is True and users == {str(security["runAsUser"])}
    for c in pod["spec"]["containers"] + pod["spec"]["initContainers"]:
        assert c["image"] == "dat-serve:gpu"  # compose's GPU image; kustomization names the registry
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
        writable = {m["mountPath"] for m in c["volumeMounts"] if not m.get("readOnly")}
        if c["securityContext"].get("readOnlyRootFilesystem"):
            assert "/tmp" in writable and env(c)["XDG_CACHE_HOME"].startswith("/tmp/")
    volumes = {v["name"] for v in pod["spec"]["volumes"]}
    assert {m["name"] for c in pod["spec"]["containers"] for m in c["volumeMounts"]} <= volumes


def test_the_autoscaler_scales_on_metrics_the_server_exports(manifests):
    from service.metrics import Metrics

    exported = {family.name for family in Metrics().registry.collect()}
    hpa = manifests["HorizontalPodAutoscaler"]["spec"]
    assert 1 <= hpa["minReplicas"] < hpa["maxReplicas"]
    names = []
    for m in hpa["metrics"]:
        assert m["type"] == "Pods" and m["pods"]["target"]["type"] == "AverageValue"
        names.append(m["pods"]["metric"]["name"])
    assert names and set(names) <= exported, set(names) - exported
    # prometheus-adapter serves exactly those names, from those series
    adapter = yaml.safe_load((K8S / "prometheus-adapter-values.yaml").read_text())
    rules = {rule["name"]["as"]: rule for rule in adapter["rules"]["custom"]}
    assert set(rules) == set(names)
    for name, rule in rules.items():
        assert rule["seriesQuery"].startswith(f"{name}{{")
        assert rule["resources"]["overrides"]["pod"] == {"resource": "pod"}


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
def test_kustomize_renders_the_folder():
    done = subprocess.run(["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    kinds = [doc["kind"] for doc in yaml.safe_load_all(done.stdout)]
    assert sorted(kinds) == sorted(API_VERSIONS)
    assert "registry.example.com/dat-serve:gpu" in done.stdout
