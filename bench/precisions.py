"""Each CPU precision on all 10,000 test JPEGs, offline and served, in one run: the evidence the
default precision is chosen by.

    python -m bench.precisions                    # about 8 minutes on 2 cores
    python -m bench.precisions --precisions fp32 bf16 --out docs/performance/precisions.json

For each precision (int8 needs a model registered with save_model.py --calibration-images):
1. offline, through the serving decode and preprocessing: top-1 on the 10k, top-1 agreement with
   fp32, the largest |Δp| against fp32, and images/s in batches of 16 of the 1,017 pixel-exact images,
   each batch its own (bench/offline.py);
2. served: a fresh `bentoml serve` with PYRAMIDNET_PRECISION set; seconds to ready, then 32 `hey`
   clients on /classify, each sending its own test image: images/s and p99 of the 200s, and the share
   of the images the runner re-checked (int8+recheck; from /metrics). One image for all clients would
   measure the cascade at that image's share, all or nothing.
Then LitServe (bench/litserve_app.py: eager PyTorch fp32, batches of 64) under the same load.
Prints the table, served / offline and served / LitServe per precision, and the precision the
rule picks: the fastest served one whose top-1 is within 0.1 pp of fp32.
"""

from __future__ import annotations

import argparse
import json
import re
import tarfile
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from model_store import DEFAULT_MODEL_NAME, load_classifier
from model_store.evaluation import labelled_images, probabilities

from . import offline
from .harness import batch_counters, command, free_port, serving
from .hey import DATA_HELP, jpeg_archive, load_images, run_level

# What OpenVINO runs on the CPU (inference.choose); int8+recheck needs an int8 IR with a re-check margin
# (ship_weights.py: the embedded default's has one).
CPU_PRECISIONS = ("fp32", "bf16", "int8", "int8+recheck")
TOLERANCE_PP = 0.1  # how far below fp32's top-1 a precision may be and still be the default


def test_folder(archive: Path) -> Path:
    """The 10k test JPEGs unpacked into a temporary folder: <folder>/<class>/NNNN.jpg."""
    root = Path(tempfile.mkdtemp(prefix="bench-test-jpegs-"))
    with tarfile.open(archive) as tar:
        tar.extractall(root, filter="data")
    return root / "test"


def counters(url: str) -> tuple[float, float]:
    """(images re-checked, images classified) by the service's runner so far, from /metrics."""
    text = httpx.get(url + "/metrics", timeout=10).text
    rechecked = re.search(r"^pyramidnet_rechecked_images_total(?:\{[^}]*\})? (\S+)$", text, re.M)
    return (float(rechecked.group(1)) if rechecked else 0.0), batch_counters(url)[0]


def choose_default(table: dict[str, dict]) -> str:
    """The fastest served precision whose top-1 is within TOLERANCE_PP of fp32 (fp32 itself qualifies)."""
    floor = table["fp32"]["top1"] - TOLERANCE_PP
    return max((p for p, r in table.items() if r["top1"] >= floor), key=lambda p: table[p]["served_images_per_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=f"{DEFAULT_MODEL_NAME}:latest")
    parser.add_argument("--precisions", nargs="+", default=list(CPU_PRECISIONS), choices=CPU_PRECISIONS)
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds at concurrency 32")
    parser.add_argument("--data", type=Path, help=DATA_HELP)
    parser.add_argument("--per-class", type=int, help="only the first N test images of each class (a quick check)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    precisions = ["fp32", *(p for p in args.precisions if p != "fp32")]  # fp32 is the reference
    archive = jpeg_archive(args.data)
    folder = test_folder(archive)
    logs = folder.parent
    images = load_images(archive)
    record: dict = {"model": args.model, "test_images": str(archive), "precisions": {}}

    reference = None
    for precision in precisions:
        try:
            classifier = load_classifier(args.model, "cpu", "openvino", precision)
        except FileNotFoundError as e:  # no int8 IR: registered without --calibration-images
            print(f"{precision}: skipped: {e}", flush=True)
            continue
        paths, labels = labelled_images(folder, classifier.spec.classes, args.per_class)
        batches_16 = offline.real_batches(16, classifier.spec)
        p = probabilities(classifier, paths)
        reference = p if reference is None else reference
        row = record["precisions"][precision] = {
            "images": len(paths),
            "top1": round(float((p.argmax(1) == labels).mean() * 100), 2),
            "agreement_with_fp32": round(float((p.argmax(1) == reference.argmax(1)).mean() * 100), 2),
            "max_abs_dp_vs_fp32": float(np.abs(p - reference).max()),
            "offline_images_per_s": round(offline.throughput(classifier.predict_proba, batches_16, 3.0)[0], 1),
        }
        del classifier
        env = {"PYRAMIDNET_MODEL": args.model, "PYRAMIDNET_PRECISION": precision}
        port, started = free_port(), time.monotonic()
        with serving(command("service", port), port, env, logs / f"service-{precision}.log") as (url, _):
            row["ready_s"] = round(time.monotonic() - started, 1)
            before = counters(url)
            served = run_level(url, images, 32, duration=args.seconds, bodies=32)
            (rechecked, classified) = (a - b for a, b in zip(counters(url), before, strict=True))
        row |= {
            "served_images_per_s": served["images_per_s"],
            "served_p99_ms": served["p99_ms"],
            "served_codes": served["codes"],
            "served_rechecked_pct": round(100 * rechecked / classified, 1) if precision == "int8+recheck" else None,
        }
        print(json.dumps({precision: row}), flush=True)

    port = free_port()
    with serving(command("litserve", port), port, {"PYRAMIDNET_MODEL": args.model}, logs / "litserve.log") as (url, _):
        litserve = run_level(url, images, 32, duration=args.seconds, bodies=32)
    record["litserve"] = {
        "served_images_per_s": litserve["images_per_s"],
        "served_p99_ms": litserve["p99_ms"],
        "served_codes": litserve["codes"],
    }
    table = record["precisions"]
    for row in table.values():
        row["served_over_offline"] = round(row["served_images_per_s"] / row["offline_images_per_s"], 3)
        row["served_over_litserve"] = round(row["served_images_per_s"] / litserve["images_per_s"], 2)
    record["default_by_rule"] = choose_default(table)

    images_seen = table["fp32"]["images"]
    print(
        f"\n{images_seen:,} test JPEGs; served: 32 hey clients on /classify for {args.seconds:.0f} s, "
        "each sending its own test image\n"
    )
    print(
        "| precision | top-1 % | agreement with fp32 % | max abs dp vs fp32 | offline img/s (batch 16) "
        "| served img/s | p99 ms | served re-checked % | served / offline | served / LitServe | ready s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for precision, r in table.items():
        rechecked = "" if r["served_rechecked_pct"] is None else r["served_rechecked_pct"]
        print(
            f"| {precision} | {r['top1']:.2f} | {r['agreement_with_fp32']:.2f} | {r['max_abs_dp_vs_fp32']:.2g} "
            f"| {r['offline_images_per_s']:.0f} | {r['served_images_per_s']:.0f} | {r['served_p99_ms']:.0f} "
            f"| {rechecked} | {r['served_over_offline']:.0%} | {r['served_over_litserve']:.2f}x "
            f"| {r['ready_s']:.1f} |"
        )
    print(f"| LitServe, eager fp32 | | | | | {litserve['images_per_s']:.0f} | {litserve['p99_ms']:.0f} | | | | |")
    rule = f"the fastest served within {TOLERANCE_PP} pp of fp32's top-1"
    print(f"\ndefault by the rule ({rule}): {record['default_by_rule']}")
    if args.out:
        args.out.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
