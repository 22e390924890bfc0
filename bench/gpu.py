"""The GPU check: one command, under 3 minutes on one GPU, that says whether serving and training run on it and
how fast. What a lent GPU machine runs first (docs/training.md#on-a-gpu).

    python -m bench.gpu --data DATA --out DIR

1. parity: the service's torch backend on the GPU (`fused`, at fp16, its default there, then bf16 and fp32)
   against the CPU's fp32 (eager) on the 1,017 pixel-exact test images: the largest probability difference,
   the share of top-1 answers that agree, top-1;
2. offline: images/s of the default (fp16) at batches 1 to 256;
3. training: images/s of train.py's step at the recipe's batch of 128 (the augmentation on the GPU, bf16
   autocast, channels-last, Nesterov SGD, the EMA), eager and torch.compile'd, what compiling costs and after
   how many images it pays, and what 300 epochs would take at the faster;
4. served: `bentoml serve` on the GPU (the embedded default, registered first), /classify_batch with 16
   images a request at 32 `hey` clients, against the offline rate at the runner's largest batch.

DATA is this project's CIFAR-10 layout (test-exact-first1017.npz and test-jpeg.tar.gz; `scripts/gpu_kit.py`
copies them into the kit). Without CUDA it exits with one line. `--device cpu` rehearses the whole check on the
CPU (a check of this script before a GPU window, not a measurement; tests/e2e/test_gpu_check.py runs it). The table
is printed last; `--out` gets gpu.json and the server's log. Untested on a GPU: none has been lent to this project
yet.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from model_store import ModelSpec, cifar10
from model_store.architecture import build_network
from model_store.backends import torch_classifier
from model_store.devices import autocast, choose_precision, hardware, memory_format
from model_store.imaging import normalize
from model_store.inference import Classifier
from model_store.registry import embedded_default
from model_store.training.run import Draws, augment, build_model, build_optimizer, learn
from scripts.train import parse_args, recipe_of

from .harness import command, free_port, serving
from .hey import DATA_HELP, REPO, data_folder, load_images, run_level
from .offline import throughput

BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
# As bench.harness measures capacity: the load's 512 images in flight are queued, none shed with a 503.
CAPACITY = {"PYRAMIDNET_MAX_WAIT_S": "600", "PYRAMIDNET_MAX_LATENCY_MS": "120000"}
PIECE_MIN = 7  # the training piece of a 15-minute GPU window (docs/training.md#on-a-gpu)
# The shipped run's recipe (docs/training.md: train.py's defaults with Cutout 16) at 300 epochs: what the training
# figures are for.
RECIPE = recipe_of(parse_args(["--data", ".", "--run", ".", "--epochs", "300", "--cutout", "16"]))
EPOCH_IMAGES = 50_000 - 10 * RECIPE.holdout_per_class  # the training images an epoch trains on


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def parity(device: torch.device, precisions: list[str], exact: Path) -> tuple[dict, Classifier]:
    """Each precision's answers on the GPU against CPU fp32's, and the first precision's classifier."""
    spec = ModelSpec()
    with np.load(exact) as data:
        x, labels = normalize(data["images"], spec), data["labels"]
    weights = embedded_default().state_dict

    def classifier(where: torch.device, backend: str, precision: str) -> Classifier:
        network = build_network(spec, weights).eval()
        return torch_classifier(
            network, spec, tag="embedded", metadata={}, device=where, backend=backend, precision=precision
        )

    reference = classifier(torch.device("cpu"), "eager", "fp32").predict_proba(x)
    table, first = {}, None
    for precision in precisions:
        served = classifier(device, "fused", precision)
        p = served.predict_proba(x)
        table[precision] = {
            "max_abs_dp": float(np.abs(p - reference).max()),
            "top1_agreement_pct": round(float((p.argmax(1) == reference.argmax(1)).mean() * 100), 2),
            "top1_pct": round(float((p.argmax(1) == labels).mean() * 100), 2),
        }
        first = first or served
    table["cpu fp32 (reference)"] = {"top1_pct": round(float((reference.argmax(1) == labels).mean() * 100), 2)}
    assert first is not None
    return table, first


def offline(classifier: Classifier, exact: Path, seconds: float, batch_sizes: list[int]) -> dict[int, float]:
    """Images/s of `classifier.predict_proba` (numpy in, probabilities back on the host) per batch size."""
    with np.load(exact) as data:
        images = data["images"]
    rates = {}
    for n in batch_sizes:
        batch = normalize(images[np.arange(n) % len(images)], classifier.spec)
        rates[n] = round(throughput(classifier.predict_proba, batch, seconds)[0], 1)
    return rates


def training(device: torch.device, compiled: bool, seconds: float) -> dict[str, float]:
    """train.py's step at RECIPE's batch size on random images held on the device: images/s over `seconds` of
    warm steps, and the first step's seconds (where torch.compile spends its time)."""
    spec = ModelSpec()
    layout = memory_format(device)
    model = build_model(spec).to(device, memory_format=layout)
    forward: Callable[[torch.Tensor], torch.Tensor] = torch.compile(model, dynamic=False) if compiled else model
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(RECIPE.ema_decay), use_buffers=True)
    optimizer = build_optimizer(model, RECIPE)
    amp = autocast(choose_precision("auto", device), device)  # bf16 where the device computes it natively
    generator = torch.Generator().manual_seed(0)
    pool = torch.randint(0, 256, (4096, 3, 32, 32), dtype=torch.uint8, generator=generator).to(device)
    labels = torch.randint(0, 10, (4096,), generator=generator).to(device)
    model.train()

    def step() -> None:
        idx = torch.randint(0, len(pool), (RECIPE.batch_size,), generator=generator).to(device)
        draws = Draws.draw(RECIPE.batch_size, generator, RECIPE.cutout)
        inputs = augment(pool[idx], draws, spec, RECIPE.cutout).contiguous(memory_format=layout)
        learn(forward, optimizer, inputs, labels[idx], amp, RECIPE)
        ema.update_parameters(model)

    start = time.perf_counter()
    step()
    sync(device)
    first = time.perf_counter() - start
    for _ in range(3):
        step()
    sync(device)
    start, steps = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        step()
        steps += 1
        if steps % 10 == 0:
            sync(device)  # the host clock measures the device's work, not how far ahead the host has queued
    sync(device)
    rate = steps * RECIPE.batch_size / (time.perf_counter() - start)
    return {"images_per_s": round(rate, 1), "first_step_s": round(first, 1)}


def served(device: torch.device, data: Path, max_batch: int, seconds: float, log: Path) -> dict:
    """/classify_batch at 32 hey clients, 16 images a request, on the service serving the embedded default, its
    admission limit and batcher budget raised (CAPACITY): what it serves when it queues every image."""
    registered = subprocess.run(
        [sys.executable, "scripts/save_model.py"], cwd=REPO, capture_output=True, text=True, check=True
    )
    tag = registered.stdout.splitlines()[0]
    env = {
        "PYRAMIDNET_MODEL": tag,
        "PYRAMIDNET_DEVICE": str(device),
        "PYRAMIDNET_MAX_BATCH_SIZE": str(max_batch),
        **CAPACITY,
        "BENTOML_DO_NOT_TRACK": "true",
    }
    port, started = free_port(), time.monotonic()
    with serving(command("service", port), port, env, log) as (url, _):
        ready = time.monotonic() - started
        info = httpx.post(url + "/model_info", timeout=30).json()
        result = run_level(
            url,
            load_images(data / "test-jpeg.tar.gz"),
            32,
            endpoint="/classify_batch",
            per_request=16,
            duration=seconds,
        )
    return {
        "settings": {k: v for k, v in env.items() if k.startswith("PYRAMIDNET_MAX")},
        "max_batch": max_batch,
        "ready_s": round(ready, 1),
        "serves": {k: info.get(k) for k in ("device", "backend", "precision")},
        **{k: result[k] for k in ("images_per_s", "p50_ms", "p99_ms", "codes")},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help=DATA_HELP)
    parser.add_argument("--out", type=Path, help="folder for gpu.json and the server's log")
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N; cpu rehearses the check")
    parser.add_argument("--seconds", type=float, default=5.0, help="timed per training and served figure")
    parser.add_argument("--offline-seconds", type=float, default=1.0, help="timed per offline batch size")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=list(BATCH_SIZES), help="offline")
    parser.add_argument(
        "--max-batch", type=int, default=128, help="the runner's largest batch while served (the GPU overlay's)"
    )
    parser.add_argument("--no-compile", action="store_true", help="leave out the torch.compile'd training step")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"bench.gpu: no CUDA GPU here (torch {torch.__version__} sees none); --device cpu rehearses the check")
        return 1
    data, out = data_folder(args.data), args.out or Path(REPO / ".gpu" / "out")
    out.mkdir(parents=True, exist_ok=True)
    exact = data / cifar10.EXACT
    record: dict = {"device": hardware(device), "torch": torch.__version__, "started": time.strftime("%FT%T%z")}

    def save(stage: str, figures: object) -> None:  # after each stage: a cut-off run keeps what it measured
        record[stage] = figures
        (out / "gpu.json").write_text(json.dumps(record, indent=2) + "\n")
        print(f"{stage}: {json.dumps(figures)}", flush=True)

    precisions = ["fp16", "bf16", "fp32"] if device.type == "cuda" else ["fp32"]
    table, default = parity(device, precisions, exact)
    save("parity", table)
    save("offline_images_per_s", offline(default, exact, args.offline_seconds, args.batch_sizes))
    del default
    save("training_eager", training(device, compiled=False, seconds=args.seconds))
    save("served", served(device, data, args.max_batch, args.seconds, out / "service.log"))
    if not args.no_compile:
        save("training_compiled", training(device, compiled=True, seconds=args.seconds))
    print(report(record))
    return 0


def report(record: dict) -> str:
    """The check's table, and what the figures mean for a 300-epoch run."""
    lines = [f"\n{record['device']}, torch {record['torch']}", "", "| precision | max abs dp | top-1 agrees | top-1 |"]
    lines.append("|---|---:|---:|---:|")
    for precision, row in record["parity"].items():
        dp, agree = row.get("max_abs_dp"), row.get("top1_agreement_pct")
        lines.append(
            f"| {precision} | {'' if dp is None else f'{dp:.1e}'} | {'' if agree is None else f'{agree:.2f} %'} "
            f"| {row['top1_pct']:.2f} % |"
        )
    rates = record["offline_images_per_s"]
    lines += ["", "offline img/s, batch " + "  ".join(f"{n}: {rate:,.0f}" for n, rate in rates.items())]
    served = record["served"]
    largest = max(n for n in rates if n <= served["max_batch"])
    lines.append(
        f"served /classify_batch, 32 clients x 16 images: {served['images_per_s']:,.0f} img/s "
        f"({served['images_per_s'] / rates[largest]:.0%} of offline at batch {largest}), p99 {served['p99_ms']} ms, "
        f"ready in {served['ready_s']} s, codes {served['codes']}, serving {served['serves']}"
    )
    eager = record["training_eager"]["images_per_s"]
    best, how = eager, "eager"
    lines.append(f"training, batch {RECIPE.batch_size}: eager {eager:,.0f} img/s")
    if "training_compiled" in record:
        compiled = record["training_compiled"]
        extra = compiled["first_step_s"] - record["training_eager"]["first_step_s"]
        if compiled["images_per_s"] > eager:
            pays = extra / (1 / eager - 1 / compiled["images_per_s"])
            verdict = f"pays after {pays:,.0f} images ({pays / EPOCH_IMAGES:.1f} epochs): train with --compile"
            best, how = compiled["images_per_s"], "compiled"
        else:
            verdict = "never pays: train without --compile"
        lines.append(f"  compiled {compiled['images_per_s']:,.0f} img/s, {extra:.0f} s to compile: {verdict}")
    hours = RECIPE.epochs * EPOCH_IMAGES / best / 3600
    pieces = math.ceil(hours * 60 / PIECE_MIN)
    lines.append(
        f"  300 epochs at {best:,.0f} img/s ({how}): {hours:.1f} h of steps, {pieces} pieces of {PIECE_MIN} minutes "
        "(evaluations not counted)"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
