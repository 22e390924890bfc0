"""The load-testing tools against the shared server: Locust headless, and what bench/hey.py sends."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import httpx

from bench.hey import BOUNDARY, load_images, multipart

from ..servers import REPO, Server


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
