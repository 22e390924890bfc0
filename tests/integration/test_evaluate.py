"""Evaluation against the shared server, and the exact test images found among the test JPEGs."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import train
from ship_weights import jpeg_copies

REPO = Path(__file__).resolve().parents[2]


def script(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / name), *args], capture_output=True, text=True, timeout=900
    )


@pytest.fixture(scope="module")
def data(cifar10_dir, test_jpegs, tmp_path_factory) -> Path:
    """train/ (the first 3 training images of each class) and test/ (all 10,000 test images)."""
    root = tmp_path_factory.mktemp("cifar-train")
    with tarfile.open(cifar10_dir / "train-jpeg.tar.gz") as tar:
        wanted = [
            m for m in tar.getmembers() if m.isfile() and Path(m.name).name in {"0000.jpg", "0001.jpg", "0002.jpg"}
        ]
        tar.extractall(root, members=wanted, filter="data")
    (root / "test").symlink_to(test_jpegs)
    return root


def test_the_exact_images_are_found_among_the_test_jpegs(data, exact_images):
    images, labels = exact_images
    jpegs, jpeg_labels = train.read_split(data, "test")
    copies = jpeg_copies(labels, jpeg_labels)
    assert (jpeg_labels[copies] == labels).all()
    error = np.abs(jpegs[copies].astype(np.int16) - images).mean(axis=(1, 2, 3))
    assert error.max() < 20
    assert 4 < error.mean() < 8
    assert np.abs(jpegs[copies + 1].astype(np.int16) - images).mean() > 30


def test_evaluate_offline_and_through_the_service_agree(server, default_model, data, tmp_path):
    reports = tmp_path / "reports"
    result = script(
        "evaluate.py",
        "--images",
        str(data / "test"),
        "--model",
        str(default_model.tag),
        "--limit-per-class",
        "6",
        "--url",
        server.url,
        "--out-dir",
        str(reports),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((reports / "report.json").read_text())
    assert report["service"]["top1"] == report["top1"]
    assert report["service"]["top1_agreement"] == 100.0
    assert report["service"]["max_abs_probability_difference"] < 1e-5
