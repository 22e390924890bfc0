"""Served /classify throughput and latency at a few concurrency levels, on real CIFAR-10 JPEGs.

    python bench/throughput.py --url http://127.0.0.1:3000 --concurrency 1 32 --requests 400
    python bench/throughput.py --url http://127.0.0.1:3000 --concurrency 16 64 128 --duration 15   # overload

Prints one line per level; a figure, not a test. The full benchmark harness grows here.
"""

from __future__ import annotations

import argparse
import tarfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10" / "test-jpeg.tar.gz"


def load_images(archive: Path, limit: int) -> list[bytes]:
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if m.isfile() and m.name.endswith(".jpg")][:limit]
        return [tar.extractfile(m).read() for m in members]


def run_level(
    url: str, images: list[bytes], concurrency: int, requests: int, duration: float | None, backoff: bool = False
) -> dict:
    local = threading.local()

    def one(i: int) -> tuple[float, int]:
        if not hasattr(local, "client"):
            local.client = httpx.Client(timeout=60)
        start = time.perf_counter()
        response = local.client.post(f"{url}/classify", files={"image": ("x.jpg", images[i % len(images)], "image/jpeg")})
        if backoff and response.status_code in (429, 503):
            time.sleep(float(response.headers.get("retry-after", 1)))
        return time.perf_counter() - start, response.status_code

    def loop(deadline: float) -> list[tuple[float, int]]:
        out = []
        while time.perf_counter() < deadline:
            out.append(one(len(out)))
        return out

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(concurrency * 2)))  # warm connections and the batcher
        start = time.perf_counter()
        if duration is None:
            results = list(pool.map(one, range(requests)))
        else:  # closed loop for a fixed time: a shed client asks again at once (worst case)
            deadline = start + duration
            results = [r for rs in pool.map(loop, [deadline] * concurrency) for r in rs]
        elapsed = time.perf_counter() - start
    ok = np.array([seconds for seconds, status in results if status == 200]) * 1000
    return {
        "concurrency": concurrency,
        "requests": requests,
        "rps": len(results) / elapsed,
        "ok_rps": len(ok) / elapsed,
        "p50_ms": float(np.percentile(ok, 50)) if len(ok) else float("nan"),
        "p95_ms": float(np.percentile(ok, 95)) if len(ok) else float("nan"),
        "p99_ms": float(np.percentile(ok, 99)) if len(ok) else float("nan"),
        "codes": dict(sorted(Counter(status for _, status in results).items())),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:3000")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--duration", type=float, help="seconds per level instead of a request count")
    parser.add_argument("--honour-retry-after", action="store_true", help="a shed client waits Retry-After")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="test-jpeg.tar.gz")
    args = parser.parse_args()

    images = load_images(args.data, 1000)
    print("latencies are of the 200 answers; codes counts every answer")
    print(f"{'conc':>4} {'answers/s':>9} {'200/s':>7} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}  codes")
    for level in args.concurrency:
        r = run_level(args.url, images, level, args.requests, args.duration, args.honour_retry_after)
        print(f"{level:>4} {r['rps']:>9.1f} {r['ok_rps']:>7.1f} {r['p50_ms']:>8.1f} {r['p95_ms']:>8.1f} "
              f"{r['p99_ms']:>8.1f}  {r['codes']}")


if __name__ == "__main__":
    main()
