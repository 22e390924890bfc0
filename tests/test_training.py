"""Training and evaluation scripts, on the CPU with a handful of real CIFAR-10 images."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from model_store import CIFAR10_CLASSES, ModelSpec, read_checkpoint

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
import train  # noqa: E402


def script(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(REPO / "scripts" / name), *args], capture_output=True, text=True,
                          timeout=900)  # fmt: skip


@pytest.fixture(scope="module")
def data(cifar10_dir, test_jpegs, tmp_path_factory) -> Path:
    """train/ (the first 3 training images of each class) and test/ (all 10,000 test images)."""
    root = tmp_path_factory.mktemp("cifar-train")
    with tarfile.open(cifar10_dir / "train-jpeg.tar.gz") as tar:
        wanted = [m for m in tar.getmembers() if m.isfile() and Path(m.name).name in {"0000.jpg", "0001.jpg", "0002.jpg"}]
        tar.extractall(root, members=wanted, filter="data")
    (root / "test").symlink_to(test_jpegs)
    return root


def test_augmentation_crops_with_zero_padding_and_flips():
    x = torch.arange(2 * 3 * 32 * 32, dtype=torch.float32).reshape(2, 3, 32, 32) + 1
    out = train.augment(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    for original, cropped in zip(x, out, strict=True):
        padded = torch.nn.functional.pad(original, (4, 4, 4, 4))
        windows = [padded[:, dy : dy + 32, dx : dx + 32] for dy in range(9) for dx in range(9)]
        assert any(torch.equal(cropped, w) or torch.equal(cropped, w.flip(2)) for w in windows)


def test_normalisation_matches_the_serving_preprocessing(exact_images):
    from model_store.imaging import normalize as serving_normalize

    images = exact_images[0][:8]
    ours = train.normalize(torch.from_numpy(images).permute(0, 3, 1, 2), ModelSpec()).numpy()
    assert np.array_equal(ours, serving_normalize(images, ModelSpec()))


def test_schedule_warms_up_then_decays_to_zero():
    lrs = [train.lr_at(s, 100, 10, 0.1) for s in range(100)]
    assert lrs[0] == pytest.approx(0.01) and lrs[9] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False)) and lrs[-1] < 1e-3


def test_train_resume_register_and_evaluate(data, tmp_path, server):
    out = tmp_path / "best_pyramidnet_model.pth"
    common = ["--data", str(data), "--out", str(out), "--batch-size", "10", "--limit-per-class", "3", "--epochs", "2"]
    first = script("train.py", *common, "--time-limit-min", "0")  # stops after epoch 1, as a piece would
    assert first.returncode == 0, first.stderr[-3000:]
    assert "continue with --resume" in first.stderr
    second = script("train.py", *common, "--resume")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resumed after epoch 1" in second.stderr and "epoch 2/2" in second.stderr

    checkpoint = read_checkpoint(out)  # the seed's format, read safely
    assert checkpoint.epoch in (1, 2) and checkpoint.best_val_acc is not None
    shipped = script("ship_weights.py", "--checkpoint", str(out), "--test-accuracy-jpeg", "10.0",
                     "--test-accuracy-exact", "10.0", "--training-command", "pytest", "--data", "30 images",
                     "--out", str(tmp_path / "shipped.safetensors"))  # fmt: skip
    assert shipped.returncode == 0 and (tmp_path / "shipped.safetensors").is_file(), shipped.stderr
    registered = script("save_model.py", "--checkpoint", str(out), "--name", "trained-on-cpu")
    assert registered.returncode == 0, registered.stderr
    tag = registered.stdout.splitlines()[0]

    reports = tmp_path / "reports"
    evaluated = script("evaluate.py", "--images", str(data / "test"), "--model", tag, "--limit-per-class", "4",
                       "--out-dir", str(reports))  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    report = json.loads((reports / "report.json").read_text())
    assert report["images"] == 40 and set(report["per_class"]) == set(CIFAR10_CLASSES)
    assert np.array(report["confusion"]).sum() == 40
    assert (reports / "confusion.png").stat().st_size > 10_000 and (reports / "reliability.png").stat().st_size > 10_000


def test_evaluate_offline_and_through_the_service_agree(server, default_model, data, tmp_path):
    reports = tmp_path / "reports"
    result = script("evaluate.py", "--images", str(data / "test"), "--model", str(default_model.tag),
                    "--limit-per-class", "6", "--url", server.url, "--out-dir", str(reports))  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((reports / "report.json").read_text())
    assert report["service"]["top1"] == report["top1"]
    assert report["service"]["top1_agreement"] == 100.0
    assert report["service"]["max_abs_probability_difference"] < 1e-5
