"""The load-testing tools users run: the Locust file headless with CSV output, and bench/load.py."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from bench.load import load_images, run_level

from .conftest import REPO, Server

pytestmark = pytest.mark.server


def test_locust_headless_run_exercises_both_endpoints_without_failures(server: Server, cifar10_dir: Path, tmp_path):
    prefix = tmp_path / "locust"
    cmd = [sys.executable, "-m", "locust", "-f", "locustfile.py", "--headless", "--host", server.url,
           "-u", "4", "-r", "4", "-t", "8s", "--csv", str(prefix), "--only-summary",
           "--cifar10", str(cifar10_dir / "test-jpeg.tar.gz"), "--classify-weight", "1", "--batch-weight", "1",
           "--batch-size", "4"]  # fmt: skip
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    with open(f"{prefix}_stats.csv") as f:
        stats = {row["Name"]: row for row in csv.DictReader(f)}
    for endpoint in ("/classify", "/classify_batch"):
        assert int(stats[endpoint]["Request Count"]) > 0, stats
        assert int(stats[endpoint]["Failure Count"]) == 0, stats


def test_bench_load_reports_only_200s_under_concurrency(server: Server, cifar10_dir: Path):
    images = load_images(cifar10_dir / "test-jpeg.tar.gz", 50)
    result = run_level(server.url, images, 8, endpoint="/classify_batch", per_request=4, duration=3)
    assert result["codes"] == {"200": result["requests"]} and result["requests"] > 0
    assert result["images_per_s"] == pytest.approx(result["ok_rps"] * 4)
    assert 0 < result["p50_ms"] <= result["p95_ms"] <= result["p99_ms"]
