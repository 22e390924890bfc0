"""Opt-in (`pytest -m container`, minutes): build the image with buildah, start its entrypoint,
wait for its own HEALTHCHECK to pass, and classify a real CIFAR-10 image through it.

Needs root, buildah and debootstrap (apt-get install buildah debootstrap). Reuses the image named
by PYRAMIDNET_IMAGE when it exists, else builds it with scripts/build_image.sh.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import bentoml
import httpx
import pytest

from model_store import CIFAR10_CLASSES

from ..servers import free_port

pytestmark = pytest.mark.container  # opt-in: pytest -m container

REPO = Path(__file__).resolve().parents[2]
IMAGE = os.environ.get("PYRAMIDNET_IMAGE", "localhost/pyramidnet-cifar10:latest")


def buildah(*args: str, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["buildah", *args], capture_output=True, text=True, check=True, **kwargs)


@pytest.fixture(scope="module")
def image() -> dict:
    exists = subprocess.run(["buildah", "inspect", "--type", "image", IMAGE], capture_output=True).returncode == 0
    if not exists:
        subprocess.run(
            [str(REPO / "scripts" / "build_image.sh"), IMAGE.removeprefix("localhost/")], check=True, timeout=3600
        )
    return json.loads(buildah("inspect", "--type", "image", IMAGE).stdout)


@pytest.fixture(scope="module")
def container(image) -> dict:
    """The image's entrypoint running (host network, chroot isolation); stopped afterwards."""
    port = free_port()
    ctr = buildah("from", "--pull-never", IMAGE).stdout.strip()
    config = image["Docker"]["config"]
    env = [f"--env=BENTOML_PORT={port}"]
    started = time.monotonic()
    process = subprocess.Popen(
        [
            "buildah",
            "run",
            "--isolation=chroot",
            "--network=host",
            *env,
            ctr,
            "--",
            *config["Entrypoint"],
            *(config.get("Cmd") or []),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    yield {"ctr": ctr, "port": port, "started": started, "process": process, "config": config}
    stop()
    process.wait(timeout=30)
    subprocess.run(["buildah", "rm", ctr], capture_output=True)


def stop(grace_s: float = 60) -> None:
    """SIGTERM every process of the container, then SIGKILL what is left after the grace period.
    Chroot isolation has no PID namespace and BentoML's workers start their own sessions with an
    environment of their own, so the container's processes are found by the bento path in their
    command line (/home/bentoml/bento: only a container run serves from there)."""
    needle = b"/home/bentoml/bento"

    def inside() -> list[int]:
        pids = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                if needle in Path(f"/proc/{pid}/cmdline").read_bytes():
                    pids.append(int(pid))
            except OSError:
                continue
        return pids

    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10)):
        for pid in inside():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait_s
        while inside() and time.monotonic() < deadline:
            time.sleep(0.5)


def healthcheck(container: dict) -> bool:
    """The image's own HEALTHCHECK command, run inside the container."""
    check = container["config"]["Healthcheck"]["Test"]
    assert check[0] == "CMD"
    result = subprocess.run(
        [
            "buildah",
            "run",
            "--isolation=chroot",
            "--network=host",
            f"--env=BENTOML_PORT={container['port']}",
            container["ctr"],
            "--",
            *check[1:],
        ],
        capture_output=True,
        timeout=30,
    )
    return result.returncode == 0


def test_image_carries_a_readiness_healthcheck(image):
    check = image["Docker"]["config"]["Healthcheck"]
    assert "/readyz" in " ".join(check["Test"])
    assert check["StartPeriod"] >= 30 * 10**9
    assert check["Timeout"] >= 5 * 10**9


def test_container_becomes_healthy_and_classifies(container, sample_jpegs, capsys):
    deadline = time.monotonic() + 600
    while not healthcheck(container):
        assert container["process"].poll() is None, container["process"].stdout.read()[-3000:]
        assert time.monotonic() < deadline, "never healthy"
        time.sleep(2)
    to_healthy = time.monotonic() - container["started"]
    url = f"http://127.0.0.1:{container['port']}"
    with bentoml.SyncHTTPClient(url) as client:
        result = client.classify(image=sample_jpegs[0])
    assert result["label"] in CIFAR10_CLASSES
    assert httpx.get(f"{url}/livez").status_code == 200
    metrics = httpx.get(f"{url}/metrics")
    assert metrics.status_code == 200
    assert "# HELP bentoml_" in metrics.text
    with capsys.disabled():
        print(
            f"\ncontainer healthy {to_healthy:.1f} s after start; {sample_jpegs[0].name}: {result['label']} "
            f"({result['confidence']:.3f})"
        )
