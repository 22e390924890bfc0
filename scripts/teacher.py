"""Cache a teacher's probabilities of every training image, for distillation (train.py --teacher).

    python scripts/teacher.py --data ../shared/data/cifar10 --out runs/teacher.npz
    python scripts/teacher.py --data ../shared/data/cifar10 --out runs/teacher-2.npz --weights default old.safetensors

The teacher averages the probabilities of each image and of its mirror image, over one or more sets
of weights (`default`: the shipped ones; .safetensors or .pth files), in fp32 through OpenVINO.
The cache holds them for all training images in read_split's order (a flip-averaged teacher gives an
image and its mirror the same probabilities, so one row serves both). It prints and records the
teacher's top-1 on the run's held-out training images (never trained on): what chooses between
teachers. The test set is not read.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

from model_store import ModelSpec, cifar10
from model_store.training.data import read_split, split_holdout
from model_store.training.teacher import teacher_probabilities

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data", type=Path, required=True, help="train/ JPEGs, or train-jpeg.tar.gz; or the official binary version"
    )
    parser.add_argument("--out", type=Path, required=True, help="the cache to write (.npz)")
    parser.add_argument("--weights", nargs="+", default=["default"], help="default, .safetensors or .pth; an ensemble")
    parser.add_argument("--holdout-per-class", type=int, default=100, help="the run's (train.py's)")
    parser.add_argument("--seed", type=int, default=0, help="the run's hold-out seed (train.py's)")
    parser.add_argument("--limit-per-class", type=int, help="the run's (train.py's; smoke runs)")
    parser.add_argument(
        "--blocks-per-stage", type=int, default=18, help="the weights' (train.py's; 18: PyramidNet-110)"
    )
    args = parser.parse_args(argv)
    spec = ModelSpec(num_layers=args.blocks_per_stage)
    images, labels = read_split(cifar10.layout(args.data, REPO / cifar10.CACHE), "train", args.limit_per_class)
    probabilities, shas = teacher_probabilities(args.weights, images, spec)
    _, holdout = split_holdout(labels, args.holdout_per_class, args.seed)
    holdout_top1 = float((probabilities[holdout].argmax(1) == labels[holdout]).mean() * 100)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    scratch = args.out.with_name(args.out.name + ".tmp.npz")
    np.savez(scratch, probabilities=probabilities, holdout_top1=holdout_top1, weights=np.array(shas))
    os.replace(scratch, args.out)
    print(f"{args.out}: {len(probabilities):,} training images, flip-averaged {' + '.join(args.weights)}")
    print(f"  hold-out top-1  {holdout_top1:.2f} % on {len(holdout):,} held-out training images")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
