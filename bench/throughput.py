"""Served /classify throughput and latency at a few concurrency levels, on real CIFAR-10 JPEGs.

    python bench/throughput.py --url http://127.0.0.1:3000 --concurrency 1 32 --requests 400

Prints one line per level; a figure, not a test. The full benchmark harness grows here.
"""

from __future__ import annotations

import argparse
import tarfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10" / "test-jpeg.tar.gz"


def load_images(archive: Path, limit: int) -> list[bytes]:
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if m.isfile() and m.name.endswith(".jpg")][:limit]
        return [tar.extractfile(m).read() for m in members]


def run_level(url: str, images: list[bytes], concurrency: int, requests: int) -> dict[str, float]:
    local = threading.local()

    def one(i: int) -> tuple[float, int]:
        if not hasattr(local, "client"):
            local.client = httpx.Client(timeout=60)
        start = time.perf_counter()
        response = local.client.post(f"{url}/classify", files={"image": ("x.jpg", images[i % len(images)], "image/jpeg")})
        return time.perf_counter() - start, response.status_code

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(concurrency * 2)))  # warm connections and the batcher
        start = time.perf_counter()
        results = list(pool.map(one, range(requests)))
        elapsed = time.perf_counter() - start
    latencies = np.array([r[0] for r in results]) * 1000
    return {
        "concurrency": concurrency,
        "requests": requests,
        "rps": requests / elapsed,
        "p50_ms": float(np.percentile(latencies, 50)),
        "p95_ms": float(np.percentile(latencies, 95)),
        "p99_ms": float(np.percentile(latencies, 99)),
        "non_2xx": sum(1 for _, status in results if not 200 <= status < 300),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:3000")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="test-jpeg.tar.gz")
    args = parser.parse_args()

    images = load_images(args.data, 1000)
    print(f"{'conc':>4} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'non-2xx':>7}")
    for level in args.concurrency:
        r = run_level(args.url, images, level, args.requests)
        print(f"{level:>4} {r['rps']:>8.1f} {r['p50_ms']:>8.1f} {r['p95_ms']:>8.1f} {r['p99_ms']:>8.1f} {r['non_2xx']:>7}")


if __name__ == "__main__":
    main()
