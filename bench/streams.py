"""Why the CPU runtime splits a batch over one stream per core: throughput beside a competing process.

    python -m bench.streams                       # the registered default, fp32, batch 16
    python -m bench.streams --precision bf16 --batch 16 --duty 0 0.3 0.6

In the service the runner shares the cores with the API workers. This puts a process beside the
model that keeps one core busy for `duty` of the time (in 2 ms cycles), and measures images/s and
the model's CPU per image for OpenVINO's latency build (one stream, every thread on each layer)
and for the split the runner uses (openvino_ir.compile_ir: one stream per core). A figure, not a test.
"""

from __future__ import annotations

import argparse
import multiprocessing
import time

import numpy as np
import openvino

from model_store import DEFAULT_MODEL_NAME, cifar10, get_model, read_spec
from model_store.imaging import normalize
from model_store.openvino_ir import PLANS, compile_ir, cpu_threads, ir_path

from .hey import data_folder
from .offline import throughput


def busy(duty: float) -> None:
    while True:
        start = time.perf_counter()
        while time.perf_counter() - start < 0.002 * duty:
            pass
        time.sleep(0.002 * (1 - duty))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=f"{DEFAULT_MODEL_NAME}:latest")
    parser.add_argument("--precision", default="fp32", choices=list(PLANS))
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--duty", type=float, nargs="+", default=[0.0, 0.3, 0.6])
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args()
    model = get_model(args.model)
    xml, threads = ir_path(model.path, args.precision), cpu_threads()
    images = np.load(data_folder() / cifar10.EXACT)["images"][: args.batch]
    batch = normalize(images, read_spec(model))
    latency = openvino.Core().compile_model(
        xml,
        "CPU",
        {
            "INFERENCE_PRECISION_HINT": PLANS[args.precision][1],
            "INFERENCE_NUM_THREADS": threads,
            "PERFORMANCE_HINT": "LATENCY",
        },
    )
    runtimes = {
        "latency build": lambda b: latency.infer_new_request({0: b}),
        "split (served)": compile_ir(xml, args.precision),
    }
    print(f"{model.tag} {args.precision}, batch {args.batch}, {threads} threads")
    print(f"{'busy beside':<14}" + "".join(f"{name + ' img/s':>22}{'CPU ms/img':>12}" for name in runtimes))
    for duty in args.duty:
        hog = multiprocessing.Process(target=busy, args=(duty,), daemon=True) if duty else None
        if hog:
            hog.start()
        figures = [throughput(run, batch, args.seconds, rounds=1) for run in runtimes.values()]
        if hog:
            hog.terminate()
        print(f"{duty:<14.0%}" + "".join(f"{r:>22.1f}{ms:>12.1f}" for r, ms in figures), flush=True)


if __name__ == "__main__":
    main()
