"""Opt-in (`pytest -m container`, a few minutes): README's image steps, word for word, push the image to a
real local registry; the image pulled back from it runs in a real container runtime (podman with runc)
as the CPU overlay's rendered Deployment runs it, and is checked against that Deployment:

- as its non-root user, with its read-only root filesystem, its emptyDirs as size-limited tmpfs, its
  API-key Secret mounted read-only, its capabilities dropped and its CPU and memory limits;
- with no network at all but loopback: podman cannot publish a port of a container without a
  network, so the test publishes it itself, a forwarder on the host's loopback that enters the
  container's network namespace (socat and nsenter);
- its startup, readiness and liveness probes, read from the Deployment, pass as the kubelet runs them;
- a real CIFAR-10 image is classified, with the key, as the offline model classifies it;
- its preStop hook and then SIGTERM drain the requests in flight within terminationGracePeriodSeconds.

Needs root and Debian's podman, runc, buildah, debootstrap, socat and docker-registry
(docs/deployment.md#the-container). The figures (start to ready, drain) are printed.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml
from PIL import Image

from model_store import load_classifier

from ..parity import PARITY, offline_probabilities, served_probabilities
from ..readme import deploy_block
from ..servers import REPO, free_port

pytestmark = pytest.mark.container  # opt-in: pytest -m container

TOOLS = ("podman", "runc", "buildah", "debootstrap", "socat", "nsenter", "docker-registry")
# What this machine lets a container have (runc refuses limits above the session's own).
ULIMITS = ("--ulimit", "nofile=20000:20000", "--ulimit", "nproc=4096:4096")


def run(*args: str, timeout: float = 300, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, check=True, timeout=timeout, **kwargs)


@pytest.fixture(scope="module", autouse=True)
def tools() -> None:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"missing {missing}: apt-get install podman runc buildah debootstrap socat docker-registry")


@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> Iterator[str]:
    """Debian's docker-registry (the CNCF distribution registry) on a loopback port."""
    home = tmp_path_factory.mktemp("registry")
    port = free_port()
    config = {
        "version": 0.1,
        "storage": {"filesystem": {"rootdirectory": str(home / "data")}},
        "http": {"addr": f"127.0.0.1:{port}"},
        "log": {"level": "warn"},
    }
    (home / "config.yml").write_text(yaml.safe_dump(config))
    with (home / "registry.log").open("wb") as log:
        process = subprocess.Popen(["docker-registry", "serve", str(home / "config.yml")], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v2/").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None, (home / "registry.log").read_text()
            assert time.monotonic() < deadline, "the registry did not start"
            time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def image(registry, tmp_path_factory) -> str:
    """README's image block, as written but for the registry: the image built, pushed, removed here and
    pulled back from the registry."""
    conf = tmp_path_factory.mktemp("containers") / "registries.conf"
    conf.write_text(f'[[registry]]\nlocation = "{registry}"\ninsecure = true\n')  # plain HTTP on loopback
    env = {**os.environ, "CONTAINERS_REGISTRIES_CONF": str(conf)}
    block = deploy_block("image")
    assert block.startswith("REGISTRY=registry.example.com/ml ")
    script = block.replace("REGISTRY=registry.example.com/ml ", f"REGISTRY={registry}/ml ", 1) + 'echo "$IMAGE"\n'
    started = time.monotonic()
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=3600
    )
    assert done.returncode == 0, done.stderr[-5000:]
    built = time.monotonic() - started
    reference = done.stdout.split()[-1]
    assert re.fullmatch(rf"{re.escape(registry)}/ml/pyramidnet-cifar10-cpu:\d+\.\d+\.\d+-[0-9a-f]{{16}}", reference)
    run("podman", "rmi", "--force", reference)
    run("podman", "pull", reference, env=env)  # what the registry holds is what runs
    print(f"\nREADME's image steps: {built:.0f} s, {reference}")
    return reference


@pytest.fixture(scope="module")
def deployment(tmp_path_factory) -> dict[str, Any]:
    """The CPU overlay's Deployment, rendered by the real kubectl kustomize."""
    kubectl = str(Path(sys.executable).parent / "kubectl")
    rendered = run(kubectl, "kustomize", str(REPO / "deploy" / "k8s" / "overlays" / "cpu")).stdout
    (found,) = [doc for doc in yaml.safe_load_all(rendered) if doc and doc["kind"] == "Deployment"]
    return found


def mib(quantity: str) -> int:
    """A Kubernetes memory quantity (Mi or Gi) in MiB."""
    number, unit = re.fullmatch(r"(\d+)(Mi|Gi)", quantity).groups()
    return int(number) * {"Mi": 1, "Gi": 1024}[unit]


@pytest.fixture(scope="module")
def container(image, deployment, tmp_path_factory) -> Iterator[dict[str, Any]]:
    """The image run as the Deployment's pod runs it, reached through a forwarder on loopback."""
    pod = deployment["spec"]["template"]["spec"]
    (spec,) = pod["containers"]
    security, context = pod["securityContext"], spec["securityContext"]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    key = "key-" + os.urandom(12).hex()
    options = [
        "--network=none",
        f"--user={security['runAsUser']}:{security['runAsGroup']}",
        f"--group-add={security['fsGroup']}",
        f"--cpus={spec['resources']['limits']['cpu']}",
        f"--memory={mib(spec['resources']['limits']['memory'])}m",
        *ULIMITS,
        *[f"--env={e['name']}={e['value']}" for e in spec["env"]],
    ]
    if context["readOnlyRootFilesystem"]:
        options += ["--read-only", "--read-only-tmpfs=false"]  # no tmpfs but the Deployment's own
    if context["capabilities"]["drop"] == ["ALL"]:
        options.append("--cap-drop=ALL")
    if context["allowPrivilegeEscalation"] is False:
        options.append("--security-opt=no-new-privileges")
    for mount in spec["volumeMounts"]:
        volume = volumes[mount["name"]]
        if "emptyDir" in volume:  # the kubelet makes it writable by the fsGroup
            size = mib(volume["emptyDir"]["sizeLimit"])
            options.append(f"--tmpfs={mount['mountPath']}:rw,size={size}m,mode=1777")
        elif "secret" in volume:  # the Secret README's kustomization generates: one file, api-keys
            keys = tmp_path_factory.mktemp("secret")
            (keys / "api-keys").write_text(key + "\n")
            keys.chmod(0o755)
            (keys / "api-keys").chmod(0o644)
            options.append(f"--volume={keys}:{mount['mountPath']}:ro")
        else:
            pytest.fail(f"a volume this test cannot run: {volume}")
    name = f"pyramidnet-test-{os.getpid()}"
    started = time.monotonic()
    run("podman", "--runtime", "runc", "run", "--detach", "--name", name, "--no-healthcheck", *options, image)
    pid = run("podman", "inspect", "--format", "{{.State.Pid}}", name).stdout.strip()
    port, target = free_port(), spec["ports"][0]["containerPort"]
    forwarder = subprocess.Popen(
        [
            "socat",
            f"TCP-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr",
            f"EXEC:nsenter -t {pid} -n socat STDIO TCP\\:127.0.0.1\\:{target}",
        ],
        start_new_session=True,
    )
    try:
        yield {"name": name, "url": f"http://127.0.0.1:{port}", "key": key, "started": started, "pod": pod}
    finally:
        os.killpg(forwarder.pid, signal.SIGTERM)
        subprocess.run(["podman", "rm", "--force", name], capture_output=True, timeout=120)


def kubelet_probe(url: str, probe: dict[str, Any]) -> bool:
    """One run of an httpGet probe as the kubelet runs it: success is a 2xx or 3xx within its timeout."""
    try:
        answer = httpx.get(url + probe["httpGet"]["path"], timeout=probe["timeoutSeconds"])
    except httpx.HTTPError:
        return False
    return 200 <= answer.status_code < 400


@pytest.fixture(scope="module")
def ready(container) -> dict[str, float]:
    """The startup probe every periodSeconds until it passes (at most failureThreshold tries), then the
    readiness probe until the pod would be ready: seconds from the container's start to each."""
    spec = container["pod"]["containers"][0]
    startup, readiness = spec["startupProbe"], spec["readinessProbe"]
    tries = 0
    while not kubelet_probe(container["url"], startup):
        tries += 1
        if tries == startup["failureThreshold"]:
            logs = subprocess.run(["podman", "logs", container["name"]], capture_output=True, text=True).stderr
            pytest.fail(f"the startup probe failed {tries} times:\n{logs[-3000:]}")
        time.sleep(startup["periodSeconds"])  # each failure here took its timeout or less: the kubelet's pace, at worst
    started = time.monotonic() - container["started"]
    while not kubelet_probe(container["url"], readiness):
        assert time.monotonic() - container["started"] < 300, "never ready"
        time.sleep(1)
    return {"startup": started, "ready": time.monotonic() - container["started"], "startup_tries": tries + 1}


def test_the_image_carries_a_readiness_healthcheck_that_passes(image, container, ready):
    check = json.loads(run("podman", "image", "inspect", image).stdout)[0]["Healthcheck"]
    assert "/readyz" in " ".join(check["Test"])
    assert check["StartPeriod"] >= 30 * 10**9
    assert check["Timeout"] >= 5 * 10**9
    assert check["Test"][0] == "CMD"
    run("podman", "exec", container["name"], *check["Test"][1:])  # exits 0: healthy


def test_the_deployments_probes_pass_as_the_kubelet_runs_them(container, ready, capsys):
    spec = container["pod"]["containers"][0]
    budget = spec["startupProbe"]["periodSeconds"] * spec["startupProbe"]["failureThreshold"]
    assert ready["startup"] < budget
    assert kubelet_probe(container["url"], spec["readinessProbe"])
    assert kubelet_probe(container["url"], spec["livenessProbe"])
    with capsys.disabled():
        print(
            f"\ncontainer: startup probe passed {ready['startup']:.1f} s after start (try {ready['startup_tries']}), "
            f"ready {ready['ready']:.1f} s after start"
        )


def test_it_runs_locked_down(container, ready):
    """Non-root with the Deployment's high UID, nothing writable but /tmp, no network interface but
    loopback, no capabilities."""
    inside = run(
        "podman",
        "exec",
        container["name"],
        "sh",
        "-c",
        "id -u; touch /home/bentoml/x 2>/dev/null && echo writable || echo read-only; "
        "ls /sys/class/net; grep CapEff /proc/self/status",
    ).stdout.split("\n")
    uid, write, *rest = inside
    assert int(uid) == container["pod"]["securityContext"]["runAsUser"]
    assert write == "read-only"
    assert rest[: rest.index(next(line for line in rest if line.startswith("CapEff")))] == ["lo"]
    assert next(line for line in rest if line.startswith("CapEff")).split()[1] == "0" * 16


def test_a_real_cifar10_image_is_classified_with_the_key_as_offline(container, ready, default_model, sample_jpegs):
    url, key = container["url"], container["key"]
    files = {"images": [("images", (p.name, p.read_bytes(), "image/jpeg")) for p in sample_jpegs[:10]]}
    refused = httpx.post(url + "/classify_batch", files=files["images"], timeout=60)
    assert refused.status_code == 401  # the Secret turned authentication on
    answer = httpx.post(url + "/classify_batch", files=files["images"], headers={"X-API-Key": key}, timeout=60)
    assert answer.status_code == 200, answer.text
    results = answer.json()
    info = httpx.post(url + "/model_info", headers={"X-API-Key": key}, timeout=60).json()
    assert info["tag"] == str(default_model.tag)
    offline = load_classifier(default_model, "cpu", precision=info["precision"])
    assert abs(served_probabilities(results) - offline_probabilities(offline, sample_jpegs[:10])).max() < PARITY
    labels = [r["label"] for r in results]
    assert sum(label == path.parent.name for label, path in zip(labels, sample_jpegs[:10], strict=True)) >= 8


def test_prestop_then_sigterm_drains_the_requests_in_flight_within_the_grace_period(container, ready, capsys):
    """As the kubelet stops a pod: the preStop hook (read from the Deployment), then SIGTERM to the
    container's first process, which must exit within terminationGracePeriodSeconds with every
    request it had accepted answered."""
    pod, name = container["pod"], container["name"]
    grace = pod["terminationGracePeriodSeconds"]
    hook = pod["containers"][0]["lifecycle"]["preStop"]["exec"]["command"]
    images = [("images", (f"{i}.png", _png(i), "image/png")) for i in range(24)]
    headers = {"X-API-Key": container["key"]}

    def call(_: int) -> str:
        answer = httpx.post(container["url"] + "/classify_batch", files=images, headers=headers, timeout=120)
        return "OK" if answer.status_code == 200 else f"{answer.status_code} {answer.text}"

    with httpx.Client(headers=headers, timeout=60) as client:  # a pod that has served a while: admission
        for _ in range(40):  # has learnt its seconds per image, and takes the 192 images below at once
            assert client.post(container["url"] + "/classify_batch", files=images).status_code == 200
    run("podman", "exec", name, *hook, timeout=grace)  # the pod still serves while its hook runs
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(call, i) for i in range(8)]
        deadline = time.monotonic() + 10
        while (in_flight := _images_in_flight(container["url"])) < 48:
            assert time.monotonic() < deadline, "the requests never arrived"
            time.sleep(0.05)
        stopping = time.monotonic()
        run("podman", "kill", "--signal", "TERM", name)
        statuses = [f.result() for f in futures]
        answered = time.monotonic() - stopping
    exit_code = run("podman", "wait", name, timeout=grace + 30).stdout.strip()
    drained = time.monotonic() - stopping
    assert statuses == ["OK"] * 8
    assert drained < grace, f"exited {drained:.1f} s after SIGTERM, over the {grace} s grace period"
    assert exit_code == "0", run("podman", "logs", name).stderr[-3000:]
    with capsys.disabled():
        print(
            f"\ncontainer: SIGTERM with {in_flight:.0f} images in flight (8 requests of 24): all answered 200 within "
            f"{answered:.1f} s, exited (code {exit_code}) {drained:.1f} s after SIGTERM (grace {grace} s)"
        )


def _images_in_flight(url: str) -> float:
    metrics = httpx.get(url + "/metrics", timeout=10).text
    return float(re.search(r"^pyramidnet_images_in_flight (\S+)$", metrics, re.MULTILINE)[1])


def _png(seed: int) -> bytes:
    """A distinct 32x32 PNG per seed."""
    pixels = np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()
