"""Make a finished training run the package's embedded default (what `make serve` registers and serves).

    python scripts/ship_weights.py --run runs/pyramidnet110-cutout --data ../shared/data/cifar10

Reads RUN/model.pth and RUN/summary.json (scripts/train.py), measures top-1 in fp32 through the
serving preprocessing on all 10,000 CIFAR-10 test JPEGs, on the 1,017 pixel-exact test images and
on the JPEGs of those 1,017 (what the JPEG compression alone costs), and writes
src/model_store/weights/pyramidnet110-cifar10.safetensors: fp32, pickle-free, about
7 MB, with the measurements and the run's facts (epochs, command, wall time, hardware, data seen)
in its header, which scripts/save_model.py records as model metadata. Prints the file's sha256.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
from train import read_split

from model_store import Classifier, ModelSpec
from model_store.backends import torch_classifier
from model_store.checkpoint import CheckpointError, build_network, read_checkpoint
from model_store.imaging import normalize
from model_store.registry import SHIPPED_WEIGHTS, ship_weights

BATCH = 250


def top1(model: Classifier, images: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 in percent of uint8 (N, 32, 32, 3) images, through the serving preprocessing."""
    predicted = np.concatenate(
        [
            model.predict_proba(normalize(images[i : i + BATCH], model.spec)).argmax(1)
            for i in range(0, len(images), BATCH)
        ]
    )
    return round(float((predicted == labels).mean() * 100), 2)


def jpeg_copies(exact_labels: np.ndarray, jpeg_labels: np.ndarray) -> np.ndarray:
    """Where read_split's test JPEGs hold the exact images: image i of class c is test/<c>/k.jpg, k counting the
    earlier test images of class c (the data README's rule); the JPEGs are in class, then file order."""
    earlier = np.array([(exact_labels[:i] == c).sum() for i, c in enumerate(exact_labels)], dtype=np.int64)
    return np.searchsorted(jpeg_labels, exact_labels) + earlier


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="a finished scripts/train.py run folder")
    parser.add_argument("--data", type=Path, required=True, help="test-jpeg.tar.gz and test-exact-first1017.npz")
    parser.add_argument("--out", type=Path, default=SHIPPED_WEIGHTS)
    args = parser.parse_args(argv)
    try:
        checkpoint = read_checkpoint(args.run / "model.pth")
        summary = json.loads((args.run / "summary.json").read_text())
    except (CheckpointError, OSError, ValueError) as e:
        print(f"ship_weights: error: {args.run} is not a finished run: {e}", file=sys.stderr)
        return 1
    spec = ModelSpec()
    model = torch_classifier(
        build_network(spec, checkpoint.state_dict), spec, tag=str(args.run), metadata={}, device="cpu"
    )
    images, labels = read_split(args.data, "test")
    jpeg = top1(model, images, labels)
    exact = np.load(args.data / "test-exact-first1017.npz")
    exact_top1 = top1(model, exact["images"], exact["labels"])
    same = jpeg_copies(exact["labels"], labels)
    exact_as_jpeg = top1(model, images[same], labels[same])

    recipe = summary["recipe"]
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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
