"""Closed-loop HTTP load with `hey` (compiled, from Debian: `apt-get install hey`), on real CIFAR-10 JPEGs.

    python -m bench.hey --url http://127.0.0.1:3000 --concurrency 1 8 32 64
    python -m bench.hey --endpoint /classify_batch --images-per-request 16 --concurrency 8 32

Each of `concurrency` clients sends its next request as soon as the last one is answered (a shed
request is retried at once, as most clients do), for `duration` seconds after a short warm-up at
the same concurrency. The body is a multipart form of real test JPEGs (one for /classify). hey
takes little of the CPU it shares with the server: a Python generator cost the service about
20 % of its measured throughput on this 2-core machine. Every request's status and latency come
back from hey's CSV, so latency percentiles are of the 200s alone. A figure, not a test.
"""

from __future__ import annotations

import argparse
import csv
import io
import shutil
import subprocess
import tarfile
import tempfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from model_store import cifar10

REPO = Path(__file__).resolve().parents[1]
DATA_HELP = (
    "CIFAR-10: this project's layout, its test-jpeg.tar.gz, or the official binary version "
    "(default: where the tests look, model_store.cifar10.default_source)"
)
BOUNDARY = "bench0boundary"
HEADER = f"{'endpoint':<16}{'conc':>5}{'req/s':>8}{'img/s':>8}{'p50 ms':>8}{'p95 ms':>8}{'p99 ms':>8}  codes"


def data_folder(source: Path | None = None) -> Path:
    """CIFAR-10 in this project's layout: `source` (or where the tests look), made from the official
    binary version once if that is what it is (model_store.cifar10)."""
    return cifar10.layout(source or cifar10.default_source(REPO), REPO / cifar10.CACHE)


def jpeg_archive(source: Path | None = None) -> Path:
    """The test JPEGs' archive of `source` (data_folder)."""
    return data_folder(source) / "test-jpeg.tar.gz"


def load_images(archive: Path, limit: int = 64) -> list[bytes]:
    """The first `limit` test JPEGs of the archive, as bytes."""
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if m.isfile() and m.name.endswith(".jpg")][:limit]
        return [tar.extractfile(m).read() for m in members]


def multipart(field: str, images: list[bytes]) -> bytes:
    parts = [
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{field}"; filename="{i}.jpg"\r\n'
        f"Content-Type: image/jpeg\r\n\r\n".encode()
        + image
        + b"\r\n"
        for i, image in enumerate(images)
    ]
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def hey(
    url: str,
    body: Path,
    concurrency: int,
    *,
    duration: float | None = None,
    requests: int | None = None,
    content_type: str = f"multipart/form-data; boundary={BOUNDARY}",
    headers: dict[str, str] | None = None,
) -> list[tuple[float, int]]:
    """(seconds, status) of every request hey sent: for `duration` seconds, or `requests` in all."""
    if shutil.which("hey") is None:
        raise SystemExit("bench: hey is not installed: apt-get install hey")
    amount = ["-z", f"{duration}s"] if duration is not None else ["-n", str(requests)]
    extra = [arg for name, value in (headers or {}).items() for arg in ("-H", f"{name}: {value}")]
    out = subprocess.run(
        [
            "hey",
            *amount,
            "-c",
            str(concurrency),
            "-t",
            "120",
            "-m",
            "POST",
            "-D",
            str(body),
            "-T",
            content_type,
            *extra,
            "-o",
            "csv",
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [(float(r["response-time"]), int(r["status-code"])) for r in csv.DictReader(io.StringIO(out))]


def summarise(results: list[tuple[float, int]], seconds: float, images_per_request: int) -> dict:
    """Rates, latency percentiles of the 200s, and the status codes of one level."""
    ok = np.array([t for t, status in results if status == 200])
    return {
        "requests": len(results),
        "codes": dict(sorted(Counter(status for _, status in results).items())),
        "ok_per_s": round(len(ok) / seconds, 1),
        "images_per_s": round(len(ok) * images_per_request / seconds, 1),
        **{f"p{q}_ms": round(float(np.percentile(ok, q)) * 1000, 1) if len(ok) else None for q in (50, 95, 99)},
    }


def run_level(
    url: str,
    images: list[bytes],
    concurrency: int,
    *,
    endpoint: str = "/classify",
    per_request: int = 1,
    duration: float = 10.0,
    warmup: float = 2.0,
    bodies: int = 1,
) -> dict:
    """One concurrency level against `url + endpoint`: a warm-up, then `duration` measured seconds.

    hey sends one body again and again. `bodies` > 1 splits the clients among that many hey processes, each
    with its own images (images[k * per_request:] for the k-th): where the answer's cost depends on the image
    (int8+recheck re-checks the near ties), the load then carries a share of them like the data's, not one
    image's all or nothing."""
    field = "image" if endpoint == "/classify" else "images"
    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for k in range(bodies):
            paths.append(Path(folder) / f"{k}.multipart")
            paths[-1].write_bytes(
                multipart(field, [images[(k * per_request + i) % len(images)] for i in range(per_request)])
            )
        clients = [concurrency // bodies + (k < concurrency % bodies) for k in range(bodies)]
        if warmup:
            _together(url + endpoint, paths, clients, warmup)
        results = _together(url + endpoint, paths, clients, duration)
    return {
        "endpoint": endpoint,
        "concurrency": concurrency,
        "images_per_request": per_request,
        "bodies": bodies,
        **summarise(results, duration, per_request),
    }


def _together(url: str, bodies: list[Path], clients: list[int], duration: float) -> list[tuple[float, int]]:
    """hey on each body with its clients, all at once, for `duration` seconds; their requests together."""
    if len(bodies) == 1:
        return hey(url, bodies[0], clients[0], duration=duration)
    with ThreadPoolExecutor(len(bodies)) as pool:
        runs = [pool.submit(hey, url, body, n, duration=duration) for body, n in zip(bodies, clients, strict=True) if n]
        return [result for run in runs for result in run.result()]


def row(r: dict) -> str:
    def ms(v: float | None) -> str:
        return f"{v:>8.0f}" if v is not None else f"{'-':>8}"

    codes = ", ".join(f"{n} x {code}" for code, n in r["codes"].items())
    return (
        f"{r['endpoint']:<16}{r['concurrency']:>5}{r['ok_per_s']:>8.1f}{r['images_per_s']:>8.1f}"
        f"{ms(r['p50_ms'])}{ms(r['p95_ms'])}{ms(r['p99_ms'])}  {codes}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:3000")
    parser.add_argument("--endpoint", default="/classify", choices=["/classify", "/classify_batch"])
    parser.add_argument("--images-per-request", type=int, default=16, help="for /classify_batch")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--data", type=Path, help=DATA_HELP)
    args = parser.parse_args()
    images = load_images(jpeg_archive(args.data))
    per_request = 1 if args.endpoint == "/classify" else args.images_per_request
    print(HEADER)
    for level in args.concurrency:
        print(
            row(
                run_level(
                    args.url, images, level, endpoint=args.endpoint, per_request=per_request, duration=args.duration
                )
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
