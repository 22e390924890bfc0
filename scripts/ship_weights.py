"""Make a finished training run the package's embedded default (what `make serve` registers and serves).

    python scripts/ship_weights.py --run runs/pyramidnet110-cutout --data ../shared/data/cifar10
    python scripts/ship_weights.py --data ../shared/data/cifar10      # the int8 model of the weights shipped
    python scripts/ship_weights.py --data ../shared/data/cifar10 --int8 runs/qat/int8.xml   # its QAT one

Reads RUN/model.pth and RUN/summary.json (scripts/train.py), measures top-1 in fp32 through the
serving preprocessing on all 10,000 CIFAR-10 test JPEGs, on the 1,017 pixel-exact test images and
on the JPEGs of those 1,017 (what the JPEG compression alone costs), and writes
src/model_store/weights/pyramidnet110-cifar10.safetensors: fp32, pickle-free, about
7 MB, with the measurements and the run's facts (epochs, command, wall time, hardware, data seen)
in its header, which scripts/save_model.py records as model metadata. Prints the file's sha256.

Weights already at --out are replaced only by weights measurably better on the run's held-out
training images: compared image by image, the gain's one-sided 95 % lower bound must be above zero
(model_store/paired.py); otherwise nothing is written and the exit code is 1. The test set is
measured and reported, never used to choose.

Then, with or without --run, the weights' int8 model beside them (…-int8.xml, .bin, 3.2 MB):
NNCF's post-training quantization of their OpenVINO IR, calibrated on 30 training images of each
class outside the run's hold-out, or with --int8 the quantization-aware one scripts/quantize_aware.py
made of the weights already shipped; then measured against fp32 on the hold-out (the run's split: its
recipe with --run, else --holdout-per-class and --seed). The measurement and the weights' sha256
are recorded in the IR: the service serves int8 by default only when the drop's upper bound from
that measurement is within 0.1 pp of fp32 (docs/performance.md#precision). Beside it, the re-check
margin of `int8+recheck` (model_store/cascade.py): the smallest that covers the largest move int8 makes
to its top class's lead on 10,000 training images outside the hold-out and the calibration images,
judged against fp32 on the hold-out and its mirror images with the same bound. The top-1 of both on
the 10,000 test JPEGs is printed, a report that chooses nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import openvino

from model_store import Classifier, ModelSpec, cifar10
from model_store.cascade import answers, choose_margin
from model_store.checkpoint import CheckpointError, Weights
from model_store.conversion import CALIBRATION_PER_CLASS, build_ir, quantize_ir, save_ir
from model_store.extras import torch_required
from model_store.imaging import normalize
from model_store.openvino_ir import Int8Accuracy, Recheck, Runtime, compile_ir
from model_store.paired import only_right, upper_bound_pp
from model_store.registry import SHIPPED_WEIGHTS, embedded_default, int8_belongs_to, ship_weights
from model_store.training.data import (
    calibration_indices,
    jpeg_copies,
    read_split,
    split_holdout,
)

with torch_required("scripts/ship_weights.py"):
    from model_store.architecture import build_network
    from model_store.backends import torch_classifier
    from model_store.pth import read_checkpoint

REPO = Path(__file__).resolve().parents[1]
BATCH = 250
MARGIN_IMAGES = 10_000  # training images the re-check margin is chosen on


def right(model: Classifier, images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Whether `model` classifies each of these uint8 (N, 32, 32, 3) images right, through the serving
    preprocessing."""
    return _predict(model.predict_proba, normalize(images, model.spec)) == labels


def percent(correct: np.ndarray) -> float:
    """The share of True in `correct`, in percent, as the model card records it."""
    return round(float(correct.mean() * 100), 2)


def ship_int8(
    weights: Path, data: Path, split: dict[str, Any], qat: Path | None = None
) -> tuple[Path, Int8Accuracy, Recheck | None]:
    """The int8 model of the weights at `weights`, beside them, with its hold-out measurement recorded: the
    quantization-aware one at `qat` (scripts/quantize_aware.py, made from these weights), else NNCF's
    post-training one. `split`: the run's hold-out (train.py's `holdout_per_class`, `seed`, `limit_per_class`)."""
    checkpoint, spec = embedded_default(shipped=weights), ModelSpec()
    if qat is not None and not int8_belongs_to(qat, checkpoint):
        raise SystemExit(f"ship_weights: error: {qat} was not made from {weights}")
    images, labels = read_split(data, "train", split.get("limit_per_class"))
    train_idx, holdout = split_holdout(labels, split["holdout_per_class"], split["seed"])
    held, held_labels = normalize(images[holdout], spec), labels[holdout]
    with tempfile.TemporaryDirectory() as scratch:
        fp32 = save_ir(build_ir(spec, checkpoint.state_dict), Path(scratch))
        if qat is None:
            calibration = normalize(images[calibration_indices(labels, train_idx, CALIBRATION_PER_CLASS)], spec)
            int8 = quantize_ir(fp32, calibration, "training images outside the hold-out")
        else:
            int8 = qat
        int8_run, fp32_run = compile_ir(int8, "int8"), compile_ir(fp32, "fp32")
        int8_right = _predict(int8_run, held) == held_labels
        fp32_right = _predict(fp32_run, held) == held_labels
        losses, gains = only_right(fp32_right, int8_right)
        accuracy = Int8Accuracy(
            int8_top1=round(float(int8_right.mean() * 100), 2),
            fp32_top1=round(float(fp32_right.mean() * 100), 2),
            images=len(holdout),
            on="held-out training images",
            losses=losses,
            gains=gains,
        )
        graph = openvino.Core().read_model(int8)
        accuracy.record(graph)
        others = np.setdiff1d(train_idx, calibration_indices(labels, train_idx, CALIBRATION_PER_CLASS))
        chosen_on = np.random.default_rng(7).permutation(others)[:MARGIN_IMAGES]
        if recheck := measure_recheck(int8_run, fp32_run, normalize(images[chosen_on], spec), held, held_labels):
            recheck.record(graph)
        graph.set_rt_info(checkpoint.sha256, ["pyramidnet", "weights_sha256"])
        out = weights.with_name(f"{weights.stem}-int8.xml")
        openvino.save_model(graph, out, compress_to_fp16=False)
    return out, accuracy, recheck


def measure_recheck(
    int8: Runtime, fp32: Runtime, choosing: np.ndarray, held: np.ndarray, held_labels: np.ndarray
) -> Recheck | None:
    """The cascade's margin, chosen on `choosing` (training images outside the hold-out and the calibration
    images), judged against fp32 on the hold-out `held` and its mirror images; None where there is no image to
    choose on, or no margin of cascade.MARGINS covers int8's moves on them."""
    if not len(choosing):  # a smoke run's few images are all held out or calibrated on
        return None
    margin = choose_margin(_logits(int8, choosing), _logits(fp32, choosing))
    if margin is None:
        return None
    views, labels = np.concatenate([held, np.ascontiguousarray(held[..., ::-1])]), np.concatenate([held_labels] * 2)
    exact = _logits(fp32, views)
    cascade, near = answers(_logits(int8, views), exact, margin)
    losses, gains = only_right(exact.argmax(1) == labels, cascade == labels)
    return Recheck(
        margin=margin,
        chosen_on=f"{len(choosing):,} training images outside the hold-out",
        rechecked=round(float(near.mean()), 4),
        top1=round(float((cascade == labels).mean() * 100), 2),
        fp32_top1=round(float((exact.argmax(1) == labels).mean() * 100), 2),
        images=len(views),
        on="held-out training images and their mirror images",
        losses=losses,
        gains=gains,
    )


def holdout_gain(new: Weights, old: Weights, data: Path, split: dict[str, Any]) -> tuple[str, bool]:
    """New weights against old on the run's held-out training images, image by image (fp32): a line that
    says how they compare, and whether the gain's one-sided 95 % lower bound is above zero."""
    spec = ModelSpec()
    images, labels = read_split(data, "train", split.get("limit_per_class"))
    _, holdout = split_holdout(labels, split["holdout_per_class"], split["seed"])
    held = normalize(images[holdout], spec)
    new_right, old_right = (
        _predict(compile_ir(build_ir(spec, weights), "fp32"), held) == labels[holdout] for weights in (new, old)
    )
    new_only, old_only = only_right(new_right, old_right)
    lower = -upper_bound_pp(old_only, new_only, len(holdout))
    line = (
        f"{new_right.mean() * 100:.2f} % against {old_right.mean() * 100:.2f} % on {len(holdout):,} held-out training "
        f"images ({new_only} gained, {old_only} lost; the gain's 95 % lower bound {lower:+.2f} pp)"
    )
    return line, lower > 0


def _predict(run: Runtime, images: np.ndarray) -> np.ndarray:
    """The top-1 class of each normalised image, BATCH at a time."""
    return _logits(run, images).argmax(1)


def _logits(run: Runtime, images: np.ndarray) -> np.ndarray:
    return np.concatenate([run(images[i : i + BATCH]) for i in range(0, len(images), BATCH)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, help="a finished scripts/train.py run folder; none: the weights at --out")
    parser.add_argument(
        "--data", type=Path, required=True, help="train and test JPEGs (folders or archives), test-exact-first1017.npz"
    )
    parser.add_argument("--out", type=Path, default=SHIPPED_WEIGHTS)
    parser.add_argument("--holdout-per-class", type=int, default=100, help="without --run: the run's (train.py's)")
    parser.add_argument("--seed", type=int, default=0, help="without --run: the run's hold-out seed (train.py's)")
    parser.add_argument(
        "--int8", type=Path, help="without --run: ship this int8 model of the weights (quantize_aware.py's int8.xml)"
    )
    args = parser.parse_args(argv)
    if args.run is not None and args.int8 is not None:
        parser.error("--int8 is an int8 model of the weights already shipped: new weights (--run) need their own")
    args.data = cifar10.layout(args.data, REPO / cifar10.CACHE)
    if args.run is None:
        split = {"holdout_per_class": args.holdout_per_class, "seed": args.seed}
        return _report_int8(*ship_int8(args.out, args.data, split, args.int8), args.data)
    try:
        checkpoint = read_checkpoint(args.run / "model.pth")
        summary = json.loads((args.run / "summary.json").read_text())
    except (CheckpointError, OSError, ValueError) as e:
        print(f"ship_weights: error: {args.run} is not a finished run: {e}", file=sys.stderr)
        return 1
    recipe = summary["recipe"]
    if args.out.is_file():
        line, better = holdout_gain(
            checkpoint.state_dict, embedded_default(shipped=args.out).state_dict, args.data, recipe
        )
        print(f"  hold-out    {line}")
        if not better:
            print(f"ship_weights: not shipped: {args.run} is not measurably better than {args.out}", file=sys.stderr)
            return 1
    spec = ModelSpec()
    model = torch_classifier(
        build_network(spec, checkpoint.state_dict), spec, tag=str(args.run), metadata={}, device="cpu"
    )
    images, labels = read_split(args.data, "test")
    jpeg_right = right(model, images, labels)
    exact = np.load(args.data / cifar10.EXACT)
    jpeg, exact_top1 = percent(jpeg_right), percent(right(model, exact["images"], exact["labels"]))
    exact_as_jpeg = percent(jpeg_right[jpeg_copies(exact["labels"], labels)])

    path = ship_weights(
        checkpoint,
        args.out,
        measured_top1=f"{jpeg:.2f}",
        measured_images=str(len(images)),
        measured_on="the CIFAR-10 test JPEGs (fp32)",
        test_top1_exact=f"{exact_top1:.2f}",
        test_images_exact="1017 pixel-exact CIFAR-10 test images (0-1016)",
        test_top1_exact_as_jpeg=f"{exact_as_jpeg:.2f}",
        holdout_top1=f"{summary['holdout_top1']:.2f}",
        weights=summary["weights"],
        epochs=str(summary["epochs"]),
        training_command=summary["command"],
        train_wall_time_h=f"{summary['wall_seconds'] / 3600:.2f}",
        train_images_per_s=f"{summary['images_per_s_fastest_epoch']} in the fastest epoch, {summary['images_per_s']} "
        f"over the run",
        hardware=summary["hardware"],
        torch=summary["torch"],
        data=f"CIFAR-10 training JPEGs: {summary['train_images']} images ({recipe['holdout_per_class']} per class held "
        f"out), {summary['images_seen']} seen over {summary['epochs']} epochs",
    )
    print(f"{path} ({path.stat().st_size / 1e6:.1f} MB)")
    print(f"  sha256      {hashlib.sha256(path.read_bytes()).hexdigest()}")
    print(
        f"  test top-1  {jpeg:.2f} % on the {len(images):,} JPEGs, {exact_top1:.2f} % on the 1,017 exact images "
        f"({exact_as_jpeg:.2f} % on their JPEGs) (fp32)"
    )
    return _report_int8(*ship_int8(path, args.data, recipe), args.data)


def _report_int8(xml: Path, accuracy: Int8Accuracy, recheck: Recheck | None, data: Path) -> int:
    size = (xml.stat().st_size + xml.with_suffix(".bin").stat().st_size) / 1e6
    images, labels = read_split(data, "test")
    x = normalize(images, ModelSpec())
    int8 = _logits(compile_ir(xml, "int8"), x)
    print(f"{xml} (and .bin: {size:.1f} MB)")
    print(f"  hold-out    int8 {accuracy} ({accuracy.losses} images lost, {accuracy.gains} gained)")
    print(
        f"  test top-1  {(int8.argmax(1) == labels).mean() * 100:.2f} % on the {len(images):,} JPEGs (int8; reported)"
    )
    if recheck is None:
        print("  re-check    none: no training image is left to choose a margin on, or no margin covers int8's moves")
        return 0
    fp32 = _logits(compile_ir(build_ir(ModelSpec(), embedded_default(shipped=_weights_of(xml)).state_dict), "fp32"), x)
    cascade, near = answers(int8, fp32, recheck.margin)
    print(
        f"  re-check    {recheck} ({recheck.losses} images lost, {recheck.gains} gained; chosen on {recheck.chosen_on})"
    )
    print(
        f"  test top-1  {(cascade == labels).mean() * 100:.2f} % re-checked at margin {recheck.margin:g} "
        f"({near.mean() * 100:.1f} % of images), fp32 {(fp32.argmax(1) == labels).mean() * 100:.2f} %, "
        f"{(cascade != fp32.argmax(1)).sum()} answers differ (reported, never chosen by)"
    )
    return 0


def _weights_of(int8_xml: Path) -> Path:
    """The weights an int8 model beside them belongs to (…-int8.xml beside ….safetensors)."""
    return int8_xml.with_name(int8_xml.name.removesuffix("-int8.xml") + ".safetensors")


if __name__ == "__main__":
    raise SystemExit(main())
