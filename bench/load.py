"""Closed-loop HTTP load on real CIFAR-10 JPEGs: throughput and latency percentiles per concurrency.

    python -m bench.load --url http://127.0.0.1:3000 --concurrency 1 8 32 64
    python -m bench.load --endpoint /classify_batch --images-per-request 32 --concurrency 1 8
    python -m bench.load --concurrency 64 128 --duration 15 --honour-retry-after   # overload

Each of `concurrency` clients sends its next request as soon as the last one is answered, for
`duration` seconds after a short warm-up. One asyncio loop on aiohttp drives them all, so the
load generator takes as little as possible of the CPU it shares with the server. Prints one
line per level; a figure, not a test. `python -m bench.harness` runs it against both designs.
"""

from __future__ import annotations

import argparse
import asyncio
import tarfile
import time
from collections import Counter
from pathlib import Path

import aiohttp
import numpy as np

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10" / "test-jpeg.tar.gz"


def load_images(archive: Path = DEFAULT_DATA, limit: int = 1000) -> list[bytes]:
    """The first `limit` test JPEGs of the archive, as bytes."""
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if m.isfile() and m.name.endswith(".jpg")][:limit]
        return [tar.extractfile(m).read() for m in members]


def _form(endpoint: str, images: list[bytes]) -> aiohttp.FormData:
    form = aiohttp.FormData()
    field = "image" if endpoint == "/classify" else "images"
    for i, image in enumerate(images):
        form.add_field(field, image, filename=f"{i}.jpg", content_type="image/jpeg")
    return form


async def _level(
    url: str, endpoint: str, images: list[bytes], per_request: int, concurrency: int, duration: float, backoff: bool
) -> dict:
    results: list[tuple[float, int | str]] = []
    timeout = aiohttp.ClientTimeout(total=120)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:

        async def client(index: int, until: float, record: bool) -> None:
            n = index
            while time.perf_counter() < until:
                payload = [images[(n * per_request + k) % len(images)] for k in range(per_request)]
                n += concurrency
                start = time.perf_counter()
                try:
                    async with session.post(url + endpoint, data=_form(endpoint, payload)) as response:
                        await response.read()
                        status, retry_after = response.status, response.headers.get("retry-after")
                except (aiohttp.ClientError, asyncio.TimeoutError):  # the server dropped or never answered it
                    status, retry_after = "error", None
                if record:
                    results.append((time.perf_counter() - start, status))
                if backoff and status in (429, 503):
                    await asyncio.sleep(float(retry_after or 1))

        warm_until = time.perf_counter() + min(3.0, duration / 3)  # connections, batcher, caches
        await asyncio.gather(*(client(i, warm_until, False) for i in range(concurrency)))
        start = time.perf_counter()
        await asyncio.gather(*(client(i, start + duration, True) for i in range(concurrency)))
        elapsed = time.perf_counter() - start

    ok = np.array([seconds for seconds, status in results if status == 200]) * 1000

    def pct(q: float) -> float:
        return float(np.percentile(ok, q)) if len(ok) else float("nan")

    return {
        "endpoint": endpoint,
        "images_per_request": per_request,
        "concurrency": concurrency,
        "seconds": elapsed,
        "requests": len(results),
        "rps": len(results) / elapsed,
        "ok_rps": len(ok) / elapsed,
        "images_per_s": len(ok) * per_request / elapsed,
        "p50_ms": pct(50),
        "p95_ms": pct(95),
        "p99_ms": pct(99),
        "codes": {str(k): v for k, v in sorted(Counter(str(status) for _, status in results).items())},
    }


def run_level(
    url: str,
    images: list[bytes],
    concurrency: int,
    *,
    endpoint: str = "/classify",
    per_request: int = 1,
    duration: float = 10.0,
    backoff: bool = False,
) -> dict:
    """One closed-loop level; latencies are of the 200 answers, `codes` counts every answer."""
    return asyncio.run(_level(url, endpoint, images, per_request, concurrency, duration, backoff))


HEADER = f"{'endpoint':<15} {'conc':>4} {'req/s':>7} {'img/s':>7} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}  codes"


def row(r: dict) -> str:
    return (f"{r['endpoint']:<15} {r['concurrency']:>4} {r['ok_rps']:>7.1f} {r['images_per_s']:>7.1f} "
            f"{r['p50_ms']:>8.1f} {r['p95_ms']:>8.1f} {r['p99_ms']:>8.1f}  {r['codes']}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:3000")
    parser.add_argument("--endpoint", default="/classify", choices=["/classify", "/classify_batch"])
    parser.add_argument("--images-per-request", type=int, default=1, help="for /classify_batch")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per level")
    parser.add_argument("--honour-retry-after", action="store_true", help="a shed client waits Retry-After")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="test-jpeg.tar.gz")
    args = parser.parse_args()

    images = load_images(args.data)
    print(HEADER)
    for level in args.concurrency:
        r = run_level(args.url, images, level, endpoint=args.endpoint, per_request=args.images_per_request,
                      duration=args.duration, backoff=args.honour_retry_after)  # fmt: skip
        print(row(r), flush=True)


if __name__ == "__main__":
    main()
