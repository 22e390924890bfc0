"""`bentoml build` packages a bento that pins the model and can import everything it serves."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import bentoml
import httpx
import numpy as np
import pytest
import yaml

from model_store import decode_image, load_classifier, preprocess_batch

from ..servers import start_server, stop_server

REPO = Path(__file__).resolve().parents[2]
BENTOML = str(Path(sys.executable).parent / "bentoml")
UV = REPO / ".uv" / "bin" / "uv"  # what the Makefile installs with


def healthcheck_instruction(text: str) -> str:
    """The HEALTHCHECK instruction in `text`, continuation lines joined, whitespace normalised."""
    return " ".join(re.search(r"^HEALTHCHECK .*?\]$", text, re.MULTILINE | re.DOTALL)[0].replace("\\\n", " ").split())


def test_bento_pins_the_model_and_carries_the_library(default_model, tmp_path):
    env = {**os.environ, "PYRAMIDNET_MODEL": str(default_model.tag)}
    built = subprocess.run(
        [BENTOML, "build", "-o", "tag"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )
    assert built.returncode == 0, built.stderr[-3000:]
    tag = built.stdout.strip().splitlines()[-1].removeprefix("__tag__:")
    bento = Path(bentoml.get(tag).path)

    manifest = yaml.safe_load((bento / "bento.yaml").read_text())
    service_models = {m["tag"] for s in manifest["services"] for m in s["models"]}
    assert service_models == {str(default_model.tag)}

    src = bento / "src"
    assert (src / "service.py").is_file()
    assert {p.name for p in (src / "model_store").glob("*.py")} >= {"__init__.py", "architecture.py", "imaging.py"}
    assert not (src / "tests").exists()
    dockerfile = (bento / "env" / "docker" / "Dockerfile").read_text()
    healthcheck = next(line for line in dockerfile.splitlines() if line.startswith("HEALTHCHECK"))
    assert "--start-period=" in healthcheck
    assert "--timeout=" in healthcheck
    assert "/readyz" in dockerfile.split("HEALTHCHECK", 1)[1]
    assert "curl" not in healthcheck
    # No compilers and no download caches in the image (deploy/Dockerfile.template).
    assert "apt-get install" not in dockerfile
    assert "UV_NO_CACHE=1" in dockerfile
    requirements = [line.split("==")[0] for line in (bento / "env" / "python" / "requirements.txt").read_text().split()]
    assert len(requirements) == len(set(requirements)), f"a package pinned twice: {requirements}"

    # What docs/deployment.md says the bento holds is what it holds.
    doc = (REPO / "docs" / "deployment.md").read_text()
    pinned = re.search(r"^Pinned packages: (.+)\.$", doc, re.MULTILINE)[1].split(", ")
    assert sorted(pinned) == sorted(requirements)
    documented_envs = dict(re.findall(r"^\| `([A-Z_]+)` \| `([^`]*)` \|$", doc, re.MULTILINE))
    assert documented_envs == {e["name"]: e["value"] for e in manifest["envs"]}
    assert healthcheck_instruction(doc) == healthcheck_instruction(dockerfile)

    # Inside the bento, `model_store` resolves to the bento's own copy and service.py imports.
    probe = "import model_store, service; print(model_store.__file__); print(service.PyramidNetClassifier.name)"
    imported = subprocess.run(
        [sys.executable, "-c", probe], cwd=src, env=env, capture_output=True, text=True, timeout=300
    )
    assert imported.returncode == 0, imported.stderr[-3000:]
    module_file, service_name = imported.stdout.split()[-2:]
    assert Path(module_file).is_relative_to(src)
    assert service_name == "pyramidnet_classifier"


def test_cpu_bento_serves_the_ir_from_an_environment_without_torch(default_model, sample_jpegs, tmp_path):
    env = {**os.environ, "PYRAMIDNET_MODEL": str(default_model.tag)}
    built = subprocess.run(
        [BENTOML, "build", "-f", "bentofile.cpu.yaml", "-o", "tag"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    tag = built.stdout.strip().splitlines()[-1].removeprefix("__tag__:")
    requirements = Path(bentoml.get(tag).path) / "env" / "python" / "requirements.txt"
    pinned = {line.split("==")[0].lower() for line in requirements.read_text().split()}
    assert pinned == {"bentoml", "numpy", "openvino", "pillow", "pydantic", "pydantic-settings", "safetensors"}

    # The environment the CPU image gets: the bento's requirements and nothing else, installed by uv as
    # BentoML's Dockerfile installs them.
    if not UV.is_file():
        pytest.fail("uv not found: make test installs it in .uv")
    venv = tmp_path / "cpu-env"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    installed = subprocess.run(
        [UV, "pip", "install", "-q", "--python", venv / "bin" / "python", "-r", requirements],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert installed.returncode == 0, installed.stderr[-3000:]
    listed = subprocess.run([venv / "bin" / "pip", "list", "--format", "freeze"], capture_output=True, text=True)
    packages = {line.split("==")[0].lower() for line in listed.stdout.split()}
    assert not packages & {"torch", "torchvision", "triton"}
    # bentoml's own NVML bindings (nvidia-ml-py, 0.1 MB) are the only nvidia package: no CUDA libraries.
    assert {p for p in packages if p.startswith("nvidia")} <= {"nvidia-ml-py"}
    size = sum(f.stat().st_size for f in venv.rglob("*") if f.is_file() and not f.is_symlink())
    assert size < 1.5e9, f"CPU environment is {size / 1e9:.2f} GB"

    # Served from that environment: the fp32 probabilities of the torch reference, to 1e-4.
    server = start_server(
        str(default_model.tag),
        tmp_path / "serve.log",
        python=str(venv / "bin" / "python"),
        target=tag,
        cwd=tmp_path,
        precision="fp32",
    )
    try:
        answers = []
        for part in (sample_jpegs[:40], sample_jpegs[40:]):
            files = [("images", (p.name, p.read_bytes(), "image/jpeg")) for p in part]
            response = httpx.post(f"{server.url}/classify_batch", files=files, timeout=120)
            assert response.status_code == 200, response.text
            answers += [list(r["probabilities"].values()) for r in response.json()]
    finally:
        stop_server(server)
    reference = load_classifier(default_model, "cpu", backend="eager")
    expected = reference.predict_proba(
        preprocess_batch([decode_image(p, max_pixels=1024) for p in sample_jpegs], reference.spec)
    )
    assert np.abs(np.array(answers) - expected).max() < 1e-4
    assert "(openvino, fp32) on cpu" in server.log.read_text()
