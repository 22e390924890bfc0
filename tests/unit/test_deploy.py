"""Kubernetes manifests: every resource, base and rendered overlays, validates against the
Kubernetes schemas (strict: unknown fields fail), and the pieces refer to each other correctly."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
VERSION = kubernetes_validate.latest_version()


def load(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def merge(base: Any, patch: Any) -> Any:
    """Strategic merge as kustomize applies it here: maps merge, lists of named items merge by name."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for key, value in patch.items():
            out[key] = merge(base[key], value) if key in base else copy.deepcopy(value)
        return out
    if (
        isinstance(base, list)
        and isinstance(patch, list)
        and all(isinstance(i, dict) and "name" in i for i in base + patch)
    ):
        out = [copy.deepcopy(i) for i in base]
        for item in patch:
            match = next((i for i, b in enumerate(out) if b["name"] == item["name"]), None)
            if match is None:
                out.append(copy.deepcopy(item))
            else:
                out[match] = merge(out[match], item)
        return out
    return copy.deepcopy(patch)


def render(directory: Path) -> list[dict[str, Any]]:
    """The resources of a kustomization: its bases, its patches, its image overrides, its labels
    (the subset of kustomize these manifests use; kustomize itself is not installable here)."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    resources: list[dict[str, Any]] = []
    for entry in kustomization.get("resources", []):
        target = directory / entry
        resources += render(target) if target.is_dir() else load(target)
    for patch in kustomization.get("patches", []):
        for doc in load(directory / patch["path"]):
            index = next(
                i
                for i, r in enumerate(resources)
                if (r["kind"], r["metadata"]["name"]) == (doc["kind"], doc["metadata"]["name"])
            )
            resources[index] = merge(resources[index], doc)
    for image in kustomization.get("images", []):
        for resource in resources:
            for container in resource.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
                name, _, _ = container["image"].partition(":")
                if name == image["name"]:
                    container["image"] = f"{image.get('newName', name)}:{image.get('newTag', 'latest')}"
    for label in kustomization.get("labels", []):
        for resource in resources:
            resource["metadata"].setdefault("labels", {}).update(label["pairs"])
    return resources


OVERLAYS = ["base", "overlays/cpu", "overlays/gpu"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_manifests_validate_against_the_kubernetes_schemas(overlay):
    resources = render(K8S / overlay)
    assert {r["kind"] for r in resources} == {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"}
    for resource in resources:
        kubernetes_validate.validate(resource, VERSION, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_selectors_and_scaling_fit_together(overlay):
    resources = {r["kind"]: r for r in render(K8S / overlay)}
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
    assert resources["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert pod["spec"]["terminationGracePeriodSeconds"] > 60  # the request timeout, plus the drain


def test_gpu_overlay_asks_for_a_gpu_and_cpu_overlay_does_not():
    gpu = next(r for r in render(K8S / "overlays/gpu") if r["kind"] == "Deployment")["spec"]["template"]["spec"]
    cpu = next(r for r in render(K8S / "overlays/cpu") if r["kind"] == "Deployment")["spec"]["template"]["spec"]
    assert gpu["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert {"name": "PYRAMIDNET_DEVICE", "value": "cuda"} in gpu["containers"][0]["env"]
    assert "nvidia.com/gpu" not in str(cpu)
    assert gpu["containers"][0]["image"].startswith("registry.example.com/")
