"""Classify every image under a folder through the running service.

    python scripts/classify_dir.py PHOTOS --url http://127.0.0.1:3000 --output results.csv

Walks the folder recursively and takes every file that is an image by its bytes or by its name
(a `.jpg` that is not one is reported, not skipped), sends them to /classify_batch with the
generated client and bounded concurrency, retries shed requests (503 OVERLOADED, 429) after the
Retry-After the server asks for, and writes one row per image (CSV or JSON Lines, by the output's
extension): path, label, confidence, probabilities, error. Every image appears, with its error if
it failed. Run it again with the same output to resume: finished images are skipped.

It first waits up to --wait-ready seconds for /readyz, and stops at once with exit code 2 when
nothing answers at --url, or when the service goes away mid-run (what was written is kept).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import bentoml
import httpx
from bentoml.exceptions import BentoMLException
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

FIELDS = ("path", "label", "confidence", "probabilities", "error")
IMAGE_SUFFIXES = frozenset(Image.registered_extensions())


class Unreachable(Exception):
    """Nothing answers at the service's URL: stop the run rather than retry."""


def find_images(root: Path) -> tuple[list[Path], dict[Path, str]]:
    """(images, {unreadable file: why}) under root, sorted. A file is an image by its bytes or by
    its name; a file that is neither is left out, one named as an image is sent all the same (the
    service says what is wrong with it)."""
    images, unreadable = [], {}
    for path in sorted(p for p in root.rglob("*") if p.is_file() or p.is_symlink()):
        try:
            with Image.open(path):  # reads the header only
                images.append(path)
        except UnidentifiedImageError:
            if path.suffix.lower() in IMAGE_SUFFIXES:
                images.append(path)
        except OSError as e:
            if e.errno is None:  # recognised but damaged: the service will say what is wrong
                images.append(path)
            else:  # the operating system could not read it
                unreadable[path] = f"UNREADABLE: {e.strerror}"
    return images, unreadable


class Results:
    """The output file: rows appended and flushed one by one, so an interruption loses nothing written."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.jsonl = path.suffix.lower() in {".jsonl", ".ndjson", ".json"}
        self.done = self._read_done()
        new = not path.exists() or path.stat().st_size == 0
        self.file = path.open("a", newline="", encoding="utf-8")
        self.writer = None if self.jsonl else csv.DictWriter(self.file, FIELDS)
        if new and self.writer is not None:
            self.writer.writeheader()
        self.lock = threading.Lock()

    def _read_done(self) -> set[str]:
        if not self.path.exists():
            return set()
        text = self.path.read_text(encoding="utf-8")
        if text and not text.endswith("\n"):  # a row cut by an interruption: drop it, redo that image
            text = text[: text.rfind("\n") + 1]
            self.path.write_text(text, encoding="utf-8")
        if self.jsonl:
            return {json.loads(line)["path"] for line in text.splitlines() if line.strip()}
        return {row["path"] for row in csv.DictReader(text.splitlines())}

    def write(self, path: Path, result: dict | None, error: str | None) -> None:
        row = {
            "path": str(path),
            "label": result["label"] if result else None,
            "confidence": result["confidence"] if result else None,
            "probabilities": result["probabilities"] if result else None,
            "error": error,
        }
        with self.lock:
            if self.jsonl:
                self.file.write(json.dumps(row) + "\n")
            else:
                self.writer.writerow({**row, "probabilities": json.dumps(row["probabilities"]) if result else ""})
            self.file.flush()

    def close(self) -> None:
        self.file.close()


class Classifier:
    """One generated client per thread (a client tracks the files it uploads), retries when shed."""

    def __init__(self, url: str, token: str | None, max_retries: int) -> None:
        self.url, self.token, self.max_retries = url, token, max_retries
        self.local = threading.local()
        self.retries = 0

    def client(self) -> bentoml.SyncHTTPClient:
        if not hasattr(self.local, "client"):
            # server_ready_timeout=0: main() has waited for readiness; the client's own wait polls
            # /readyz in a loop with no pause for its whole request timeout (bentoml 1.4.39).
            self.local.client = bentoml.SyncHTTPClient(self.url, token=self.token, timeout=300, server_ready_timeout=0)
        return self.local.client

    def batch(self, paths: list[Path]) -> Iterator[tuple[Path, dict | None, str | None]]:
        """(path, result, error) for every path; a batch refused for one bad file is split up."""
        try:
            results = self._call(paths)
        except httpx.TransportError as e:
            raise Unreachable(f"lost the service at {self.url}: {e or type(e).__name__}") from None
        except BentoMLException as e:
            if len(paths) == 1 or _shed(e):
                yield from ((p, None, _describe(e)) for p in paths)
                return
            half = len(paths) // 2
            yield from self.batch(paths[:half])
            yield from self.batch(paths[half:])
            return
        yield from ((p, r, None) for p, r in zip(paths, results, strict=True))

    def _call(self, paths: list[Path]) -> list[dict]:
        for attempt in range(self.max_retries + 1):
            try:
                return self.client().classify_batch(images=paths)
            except BentoMLException as e:
                if not _shed(e) or attempt == self.max_retries:
                    raise
                self.retries += 1
                time.sleep(min(30.0, _retry_after(e) * (1 + attempt)))
        raise AssertionError("unreachable")


def wait_ready(url: str, timeout_s: float) -> None:
    """Return once /readyz answers 200; Unreachable at once if nothing listens, or after timeout_s."""
    deadline, last = time.monotonic() + timeout_s, "no answer"
    with httpx.Client(base_url=url, timeout=5) as http:
        while True:
            try:
                response = http.get("/readyz")
                if response.status_code == 200:
                    return
                last = f"/readyz answered HTTP {response.status_code}"
            except httpx.ConnectError as e:
                raise Unreachable(f"cannot reach the service at {url}: {e or 'connection refused'}") from None
            except httpx.TransportError as e:
                last = f"{type(e).__name__} from /readyz"
            if time.monotonic() > deadline:
                raise Unreachable(f"the service at {url} is not ready after {timeout_s:g} s ({last})")
            time.sleep(1)


def _status(e: BentoMLException) -> int:
    return int(getattr(e, "error_code", 0) or 0)


def _shed(e: BentoMLException) -> bool:
    """Refused for load, worth retrying later (not a 503 for any other reason)."""
    return _status(e) == 429 or (_status(e) == 503 and _error_body(e).get("code") == "OVERLOADED")


def _error_body(e: BentoMLException) -> dict:
    try:
        return json.loads(str(e))["error"]
    except (ValueError, KeyError, TypeError):
        return {}


def _retry_after(e: BentoMLException) -> float:
    return float(_error_body(e).get("retry_after") or 1)


def _describe(e: BentoMLException) -> str:
    body = _error_body(e)
    return f"{body['code']}: {body.get('message', '')}" if "code" in body else f"HTTP {_status(e)}: {e}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--url", default="http://127.0.0.1:3000")
    parser.add_argument("--output", type=Path, default=Path("results.csv"), help=".csv or .jsonl")
    parser.add_argument("--batch-size", type=int, default=16, help="images per request (default: %(default)s)")
    parser.add_argument("--concurrency", type=int, default=2, help="requests in flight (default: %(default)s)")
    parser.add_argument("--max-retries", type=int, default=8, help="retries of a shed request")
    parser.add_argument("--api-key", default=os.environ.get("PYRAMIDNET_API_KEY"), help="or PYRAMIDNET_API_KEY")
    parser.add_argument(
        "--wait-ready", type=float, default=30, help="seconds to wait for /readyz (default: %(default)s)"
    )
    args = parser.parse_args(argv)

    if not args.folder.is_dir():
        print(f"classify_dir: error: {args.folder} is not a folder", file=sys.stderr)
        return 2
    try:
        wait_ready(args.url, args.wait_ready)
    except Unreachable as e:
        print(f"classify_dir: error: {e}", file=sys.stderr)
        return 2
    images, unreadable = find_images(args.folder)
    results = Results(args.output)
    for path, why in unreadable.items():
        if str(path) not in results.done:
            results.write(path, None, why)
    todo = [p for p in images if str(p) not in results.done]
    print(
        f"{len(images)} images under {args.folder}; {len(images) - len(todo)} already in {args.output}; "
        f"{len(unreadable)} unreadable",
        file=sys.stderr,
    )

    classifier = Classifier(args.url, args.api_key, args.max_retries)
    labels: Counter[str] = Counter()
    failures = 0
    start = time.perf_counter()
    batches = [todo[i : i + args.batch_size] for i in range(0, len(todo), args.batch_size)]
    pool = ThreadPoolExecutor(args.concurrency)
    try:
        with tqdm(total=len(todo), unit="img", file=sys.stderr) as bar:
            futures = [pool.submit(lambda b: list(classifier.batch(b)), batch) for batch in batches]
            for future in as_completed(futures):
                for path, result, error in future.result():
                    results.write(path, result, error)
                    if error:
                        failures += 1
                    else:
                        labels[result["label"]] += 1
                    bar.update(1)
    except Unreachable as e:
        print(f"classify_dir: error: {e}; run again with the same --output to resume", file=sys.stderr)
        return 2
    finally:
        pool.shutdown(cancel_futures=True)
        results.close()

    elapsed = time.perf_counter() - start
    done = sum(labels.values())
    print(
        f"classified {done} in {elapsed:.1f} s ({done / max(elapsed, 1e-9):.1f} img/s), "
        f"{failures} failed, {len(unreadable)} unreadable, {classifier.retries} retries after shedding",
        file=sys.stderr,
    )
    for label, count in labels.most_common():
        print(f"  {label:<12} {count}", file=sys.stderr)
    return 0 if failures == 0 and not unreadable else 1


if __name__ == "__main__":
    sys.exit(main())
