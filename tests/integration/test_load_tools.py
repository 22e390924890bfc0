"""The load-testing tools against the shared server: Locust headless, and what bench/hey.py sends."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from bench.hey import BOUNDARY, load_images, multipart, run_level

from ..scripts import locust
from ..servers import Server

pytestmark = pytest.mark.alone  # load tests that count failures: nothing runs beside it (make test)


def test_locust_headless_run_exercises_both_endpoints_without_failures(server: Server, cifar10_dir: Path, tmp_path):
    stats = locust(
        server.url,
        tmp_path / "locust",
        *("-u", "4", "-r", "4", "-t", "8s", "--cifar10", str(cifar10_dir / "test-jpeg.tar.gz")),
        *("--classify-weight", "1", "--batch-weight", "1", "--batch-size", "4"),
    )
    for endpoint in ("/classify", "/classify_batch"):
        assert int(stats["POST", endpoint]["Request Count"]) > 0, stats
        assert int(stats["POST", endpoint]["Failure Count"]) == 0, stats


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


def test_clients_with_bodies_of_their_own_each_send_their_own_images(server: Server, cifar10_dir: Path):
    """bench/hey.py's run_level with `bodies`: one hey per body, the clients split among them, every request
    answered and counted (bench.precisions gives each of its 32 clients its own image this way)."""
    images = load_images(cifar10_dir / "test-jpeg.tar.gz", 8)
    result = run_level(server.url, images, 4, duration=1.0, warmup=0, bodies=4)
    assert result["bodies"] == 4
    assert result["requests"] > 4
    assert result["codes"] == {200: result["requests"]}
