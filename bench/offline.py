"""Offline model throughput per backend and batch size: the ceiling the served figures are held to.

    python -m bench.offline                       # every backend, batch 1 8 16 32 64 128
    python -m bench.offline --backends fused openvino --batch-sizes 16 32 --seconds 5
    python -m bench.offline --backends openvino --precisions fp32 bf16 int8

Real CIFAR-10 test images, preprocessed once; each figure is images per second of
`Classifier.predict_proba` (forward pass and softmax), best of three timed rounds.
"""

from __future__ import annotations

import argparse
import resource
import time
from collections.abc import Callable

import numpy as np

from model_store import DEFAULT_MODEL_NAME, cifar10, load_classifier
from model_store.imaging import normalize
from model_store.inference import choose
from model_store.openvino_ir import cpu_threads
from model_store.options import BACKENDS, PRECISIONS

from .hey import data_folder  # the same data as the load runs

BATCH_SIZES = (1, 8, 16, 32, 64, 128)


def real_batches(n: int, spec) -> list[np.ndarray]:
    """The 1,017 pixel-exact CIFAR-10 test images, normalised, in consecutive batches of `n` (the last partial
    one left out)."""
    images = normalize(np.load(data_folder() / cifar10.EXACT)["images"], spec)
    return [images[i : i + n] for i in range(0, len(images) - n + 1, n)]


def real_batch(n: int, spec) -> np.ndarray:
    """The first `n` pixel-exact CIFAR-10 test images, normalised."""
    data = np.load(data_folder() / cifar10.EXACT)
    images = data["images"]
    return normalize(images[np.arange(n) % len(images)], spec)


def throughput(
    run: Callable[[np.ndarray], object], batch: np.ndarray | list[np.ndarray], seconds: float, rounds: int = 3
) -> tuple[float, float]:
    """(images/s, CPU ms per image of this process) of `run(batch)` after a warm-up call: the best of
    `rounds` timed rounds that share `seconds`. A list of batches is run in turn (where the cost depends on
    the images: int8+recheck)."""
    batches = batch if isinstance(batch, list) else [batch]
    run(batches[0])  # compile / warm up this shape
    best, turn = (0.0, 0.0), 0
    for _ in range(rounds):
        before, start, done = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter(), 0
        while time.perf_counter() - start < seconds / rounds:
            current, turn = batches[turn % len(batches)], turn + 1
            run(current)
            done += len(current)
        elapsed, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
        cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
        best = max(best, (done / elapsed, cpu / done * 1000))
    return best


def measure(
    model: str, backend: str, batch_sizes=BATCH_SIZES, seconds: float = 3.0, precision: str = "fp32"
) -> dict[int, float]:
    """{batch size: images per second} for one backend and precision on the CPU (or `auto` device)."""
    classifier = load_classifier(model, "auto", backend=backend, precision=precision)
    return {n: throughput(classifier.predict_proba, real_batch(n, classifier.spec), seconds)[0] for n in batch_sizes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=f"{DEFAULT_MODEL_NAME}:latest")
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    parser.add_argument("--precisions", nargs="+", default=["fp32"], choices=PRECISIONS)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=list(BATCH_SIZES))
    parser.add_argument("--seconds", type=float, default=3.0, help="timed per batch size")
    args = parser.parse_args()
    print(f"{cpu_threads()} threads; images/s")
    print(f"{'backend':<16}" + "".join(f"{n:>8}" for n in args.batch_sizes))
    for backend in args.backends:
        for precision in args.precisions:
            try:
                choose("cpu", backend, precision)
            except ValueError:
                continue  # not a combination that runs on the CPU
            figures = measure(args.model, backend, args.batch_sizes, args.seconds, precision)
            print(
                f"{backend + ' ' + precision:<16}" + "".join(f"{figures[n]:>8.1f}" for n in args.batch_sizes),
                flush=True,
            )


if __name__ == "__main__":
    main()
