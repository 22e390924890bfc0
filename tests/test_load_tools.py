"""The load-testing tools: the Locust file headless with CSV output, what bench/hey.py sends and
reports (hey itself is a benchmark tool, installed for benchmarks, not for the tests), and the
designs the benchmarks compare the service with."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

from bench.harness import command, free_port, serving
from bench.hey import BOUNDARY, load_images, multipart, summarise
from model_store import load_classifier

from .conftest import REPO, Server
from .test_service import PARITY, offline_probabilities, served_probabilities

pytestmark = pytest.mark.server


def test_locust_headless_run_exercises_both_endpoints_without_failures(server: Server, cifar10_dir: Path, tmp_path):
    prefix = tmp_path / "locust"
    cmd = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        "locustfile.py",
        "--headless",
        "--host",
        server.url,
        "-u",
        "4",
        "-r",
        "4",
        "-t",
        "8s",
        "--csv",
        str(prefix),
        "--only-summary",
        "--cifar10",
        str(cifar10_dir / "test-jpeg.tar.gz"),
        "--classify-weight",
        "1",
        "--batch-weight",
        "1",
        "--batch-size",
        "4",
    ]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    with open(f"{prefix}_stats.csv") as f:
        stats = {row["Name"]: row for row in csv.DictReader(f)}
    for endpoint in ("/classify", "/classify_batch"):
        assert int(stats[endpoint]["Request Count"]) > 0, stats
        assert int(stats[endpoint]["Failure Count"]) == 0, stats


def test_the_benchmark_body_is_a_batch_the_service_answers(server: Server, cifar10_dir: Path):
    images = load_images(cifar10_dir / "test-jpeg.tar.gz", 4)
    response = httpx.post(
        server.url + "/classify_batch",
        content=multipart("images", images),
        timeout=60,
        headers={"content-type": f"multipart/form-data; boundary={BOUNDARY}"},
    )
    assert response.status_code == 200
    assert len(response.json()) == 4


def test_benchmark_figures_count_only_the_200s():
    results = [(0.1, 200), (0.2, 200), (0.3, 200), (0.9, 200), (5.0, 503), (0.01, 503)]
    summary = summarise(results, seconds=2.0, images_per_request=4)
    assert summary["codes"] == {200: 4, 503: 2}
    assert summary["requests"] == 6
    assert summary["ok_per_s"] == 2.0
    assert summary["images_per_s"] == 8.0
    assert summary["p50_ms"] == 250.0
    assert summary["p99_ms"] < 900


@pytest.mark.parametrize("design", ["seed_design", "litserve"])
def test_the_designs_compared_with_serve_the_same_weights(design, default_model, sample_jpegs, tmp_path):
    port, env = free_port(), {"PYRAMIDNET_MODEL": str(default_model.tag)}
    with serving(command(design, port), port, env, tmp_path / f"{design}.log") as (url, _):
        answers = [
            httpx.post(url + "/classify", files={"image": p.read_bytes()}, timeout=60) for p in sample_jpegs[:10]
        ]
    results = [a.json() for a in answers if a.status_code == 200]
    assert len(results) == 10, [a.text for a in answers]
    eager = load_classifier(default_model, "cpu", "eager", "fp32")
    assert np.abs(served_probabilities(results) - offline_probabilities(eager, sample_jpegs[:10])).max() < PARITY
