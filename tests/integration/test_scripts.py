"""save_model.py and the Makefile as a user runs them: registration, measurement, refusals, one model knob."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import bentoml
import pytest
import torch

from model_store import ModelSpec
from model_store.architecture import from_spec
from model_store.evaluation import verdict
from model_store.registry import SHIPPED_WEIGHTS

from ..checkpoints import shipped_as_pth

REPO = Path(__file__).resolve().parents[2]


def backed(metadata) -> bool | None:
    """What a stored model's metadata backs (/model_info's `trained`)."""
    return verdict(metadata, 10)[0]


def stored_tags() -> set[str]:
    return {str(m.tag) for m in bentoml.models.list()}


def run_save_model(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / "save_model.py"), *args],
        capture_output=True,
        text=True,
        env=os.environ,
        timeout=300,
    )


def test_save_model_script_registers_a_checkpoint(tmp_path):
    path = tmp_path / "best_pyramidnet_model.pth"
    shipped_as_pth(path, epoch=9, best_val_acc=91.0)
    result = run_save_model("--checkpoint", str(path), "--name", "scripted", "--label", "owner=ml")
    assert result.returncode == 0, result.stderr
    tag = result.stdout.splitlines()[0]
    assert tag.startswith("scripted:")
    assert "1,772,706" in result.stdout
    assert "91.0" in result.stdout
    model = bentoml.models.get(tag)
    assert model.info.labels == {"owner": "ml"}
    # Its own claim is recorded, not vouched for: nothing was measured.
    assert backed(model.info.metadata) is None
    assert "trained     unknown" in result.stdout
    assert "--eval-images" in result.stdout


def test_save_model_measures_top1_on_labelled_images_when_asked(tmp_path, test_jpegs):
    folder = tmp_path / "labelled"
    for class_dir in test_jpegs.iterdir():
        (folder / class_dir.name).mkdir(parents=True)
        for image in sorted(class_dir.glob("*.jpg"))[:10]:
            (folder / class_dir.name / image.name).symlink_to(image)
    path = tmp_path / "fresh.pth"  # a freshly initialised network: what "trained": true once hid
    torch.manual_seed(11)
    torch.save({"model_state_dict": from_spec(ModelSpec()).state_dict(), "best_val_acc": 97.0}, path)
    result = run_save_model("--checkpoint", str(path), "--name", "measured", "--eval-images", str(folder))
    assert result.returncode == 0, result.stderr
    meta = bentoml.models.get(result.stdout.splitlines()[0]).info.metadata
    assert meta["measured_images"] == 100
    assert meta["measured_top1"] < 20
    assert backed(meta) is False
    assert "no better than chance" in result.stdout
    assert "97.0" in result.stdout


def test_save_model_script_defaults_to_the_embedded_model():
    result = run_save_model("--name", "embedded")
    assert result.returncode == 0, result.stderr
    assert f"source      embedded:{SHIPPED_WEIGHTS.name}" in result.stdout
    assert "measured    top-1" in result.stdout
    assert "10000 images" in result.stdout
    assert "trained     true" in result.stdout
    assert "WARNING" not in result.stdout
    assert backed(bentoml.models.get(result.stdout.splitlines()[0]).info.metadata) is True


def test_save_model_script_ends_quietly_when_its_reader_leaves_early():
    # `save_model.py | head -n1` with a reader that is gone before the tag is printed.
    with subprocess.Popen(
        [sys.executable, str(REPO / "scripts" / "save_model.py"), "--name", "early-reader"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ,
    ) as proc:
        proc.stdout.close()
        stderr = proc.stderr.read()
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr, stderr
    assert bentoml.models.get("early-reader:latest").info.metadata["source"].startswith("embedded:")  # registered


@pytest.mark.parametrize("content", [b"", b"not a checkpoint", b"PK\x03\x04truncated"])
def test_save_model_script_refuses_bad_input_with_one_line(tmp_path, content):
    path = tmp_path / "bad.pth"
    path.write_bytes(content)
    before = stored_tags()
    result = run_save_model("--checkpoint", str(path), "--name", "refused")
    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1
    assert "error" in result.stderr
    assert stored_tags() == before


def make(*args: str, **env: str) -> str:
    result = subprocess.run(
        ["make", "-n", *args], cwd=REPO, capture_output=True, text=True, timeout=60, env={**os.environ, **env}
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def nvidia_smi(folder: Path, listing: str, code: int) -> dict[str, str]:
    """PATH with an `nvidia-smi` that lists `listing` and exits with `code`, as the real one does."""
    folder.mkdir()
    (folder / "nvidia-smi").write_text(f"#!/bin/sh\necho '{listing}'\nexit {code}\n")
    (folder / "nvidia-smi").chmod(0o755)
    return {"PATH": f"{folder}:{os.environ['PATH']}"}


@pytest.mark.parametrize(
    ("listing", "code", "installed"),
    [
        (None, 0, "'.'"),  # no nvidia-smi at all
        ("No devices were found", 6, "'.'"),  # the driver's tools, no GPU
        ("GPU 0: NVIDIA L4 (UUID: GPU-5f1c)", 0, "'.[torch]'"),
    ],
    ids=["no-driver", "no-gpu", "gpu"],
)
def test_make_serve_installs_torch_only_where_a_gpu_needs_it(tmp_path, listing, code, installed):
    env = {} if listing is None else nvidia_smi(tmp_path / "bin", listing, code)
    if listing is None:  # a PATH on which no nvidia-smi can be found
        env = {"PATH": ":".join(d for d in os.environ["PATH"].split(":") if not (Path(d) / "nvidia-smi").exists())}
    venv = f"VENV={tmp_path / 'venv'}"

    def installs(target: str) -> list[str]:
        """What `make -n target` installs into the venv (uv, into that venv's Python): the rest of each line."""
        into = f"uv pip install --python {tmp_path / 'venv'}/bin/python "
        return [line.split(into)[1] for line in make(target, venv, **env).splitlines() if into in line]

    serve, test, torch = installs("serve"), installs("test"), installs("install-torch")
    assert [line.endswith(f"-e {installed} -c constraints.txt") for line in serve] == [True]
    assert torch[-1].endswith("-e '.[torch]' -c constraints.txt")
    assert [line.endswith("-e '.[dev]' -c constraints.txt") for line in test] == [True]  # the tests' versions


def test_uv_installs_from_the_find_links_pip_is_configured_with(tmp_path):
    """uv reads no pip configuration: the Makefile passes pip's find-links on (where a machine keeps torch's CPU
    build), from the environment or from pip's configuration files, and none where pip has none."""
    venv = f"VENV={tmp_path / 'venv'}"
    (tmp_path / "pip.conf").write_text(f"[global]\nfind-links = {tmp_path / 'wheels'}\n")
    from_env = make("install-torch", venv, PIP_FIND_LINKS="/srv/a /srv/b")
    from_file = make("install-torch", venv, PIP_FIND_LINKS="", PIP_CONFIG_FILE=str(tmp_path / "pip.conf"))
    without = make("install-torch", venv, PIP_FIND_LINKS="", PIP_CONFIG_FILE=os.devnull)
    assert "--find-links /srv/a --find-links /srv/b -e '.[torch]'" in from_env
    assert f"--find-links {tmp_path / 'wheels'} -e '.[torch]'" in from_file
    assert "uv pip install" in without
    assert "--find-links" not in without


def test_make_serve_has_one_model_knob():
    assert 'tag="team-model:v3"' in make("serve", "MODEL=team-model:v3")
    assert 'tag="team-model:v4"' in make("serve", PYRAMIDNET_MODEL="team-model:v4")
    assert 'tag=""' in make("serve", PYRAMIDNET_MODEL="")  # unset: the embedded default, pinned by its weights
