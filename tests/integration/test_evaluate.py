"""Evaluation against the shared server, and the exact test images found among the test JPEGs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from model_store.training.data import jpeg_copies, read_split

from ..scripts import script

REPO = Path(__file__).resolve().parents[2]


def test_the_exact_images_are_found_among_the_test_jpegs(training_data, exact_images):
    images, labels = exact_images
    jpegs, jpeg_labels = read_split(training_data, "test")
    copies = jpeg_copies(labels, jpeg_labels)
    assert (jpeg_labels[copies] == labels).all()
    error = np.abs(jpegs[copies].astype(np.int16) - images).mean(axis=(1, 2, 3))
    assert error.max() < 20
    assert 4 < error.mean() < 8
    assert np.abs(jpegs[copies + 1].astype(np.int16) - images).mean() > 30


def test_evaluate_offline_and_through_the_service_agree(server, default_model, training_data, tmp_path):
    reports = tmp_path / "reports"
    result = script(
        "evaluate.py",
        "--images",
        str(training_data / "test"),
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


def test_evaluate_reads_cifar10_as_the_tests_do(cifar10_dir, default_model, tmp_path):
    """--images may name CIFAR-10 itself (this project's layout or the official binary version): its test
    images, unpacked once under .data/."""
    reports = tmp_path / "reports"
    result = script(
        "evaluate.py",
        *("--images", str(cifar10_dir), "--model", str(default_model.tag)),
        *("--limit-per-class", "2", "--out-dir", str(reports)),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((reports / "report.json").read_text())
    assert report["images"] == 20
    assert Path(report["folder"]) == cifar10_dir
