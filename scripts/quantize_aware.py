"""Quantization-aware training (QAT) of the int8 model of trained weights, on the CPU, in pieces that resume.

    python scripts/quantize_aware.py --data ../shared/data/cifar10 --run runs/qat --steps 600
    python scripts/quantize_aware.py --data ../shared/data/cifar10 --run runs/qat --steps 600 --resume
    python scripts/ship_weights.py --data ../shared/data/cifar10 --int8 runs/qat/int8.xml

It starts where ship_weights.py's int8 model starts: NNCF's post-training quantization of the weights
(here of the torch network), calibrated on the first 30 training images of each class outside the
hold-out. Then it fine-tunes the weights and the quantizers' ranges, with the batch norms frozen,
so that the int8 network's probabilities match the fp32 network's: the loss is the KL divergence
to fp32 (OpenVINO, the precision the service calls exact) at temperature 1, on training images
cropped and flipped as in training, by SGD with momentum, the learning rate decaying linearly to
zero. The labels are not read: the aim is fp32's answers, not new ones.

The hold-out is never trained on. Every --eval-every steps the int8 network is exported to OpenVINO
and compared with fp32 on it, image by image (history.jsonl: top-1 of both, the images each alone
gets right, agreement). The run folder holds state.pt (everything a piece needs to continue
exactly), history.jsonl, and at the end int8.xml (.bin), the OpenVINO int8 model with the fp32
weights' sha256 recorded, and summary.json. A piece ends cleanly at `--time-limit-min`, on SIGTERM
or on SIGINT, after the step in progress. ship_weights.py --int8 measures and ships the result.
The test set is not read.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path

from model_store import cifar10
from model_store.extras import torch_required

with torch_required("scripts/quantize_aware.py"):
    import torch  # noqa: F401 (the one-line message when torch is missing, before NNCF's own)

try:
    from model_store.training.qat import Piece, Recipe, quantize_aware
except ImportError as e:
    if e.name != "nncf":
        raise
    raise SystemExit("quantize_aware.py needs NNCF: pip install -e '.[int8]'") from None

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data", type=Path, required=True, help="train/ JPEGs, or train-jpeg.tar.gz; or the official binary version"
    )
    parser.add_argument("--run", type=Path, required=True, help="folder for state, history and the int8 model")
    parser.add_argument("--weights", default="default", help="default (the shipped weights), .safetensors or .pth")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=5e-4, help="the first step's; decays linearly to zero")
    parser.add_argument("--eval-every", type=int, default=150, help="steps between hold-out comparisons")
    parser.add_argument("--holdout-per-class", type=int, default=100, help="the weights' run's (train.py's)")
    parser.add_argument("--seed", type=int, default=0, help="the weights' run's hold-out seed (train.py's)")
    parser.add_argument("--limit-per-class", type=int, help="use only this many images per class (smoke runs)")
    parser.add_argument("--blocks-per-stage", type=int, default=18, help="the weights' (18: PyramidNet-110)")
    parser.add_argument("--resume", action="store_true", help="continue from RUN/state.pt")
    parser.add_argument("--time-limit-min", type=float, help="end this piece after the first step past it")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    piece = Piece(
        data=cifar10.layout(args.data, REPO / cifar10.CACHE),
        run=args.run,
        command=shlex.join(["python", "scripts/quantize_aware.py", *(sys.argv[1:] if argv is None else argv)]),
        weights=args.weights,
        resume=args.resume,
        eval_every=args.eval_every,
        time_limit_min=args.time_limit_min,
    )
    recipe = Recipe(
        weights="",  # the piece's weights' sha256, filled in
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        holdout_per_class=args.holdout_per_class,
        limit_per_class=args.limit_per_class,
        seed=args.seed,
        blocks_per_stage=args.blocks_per_stage,
    )
    return quantize_aware(piece, recipe)


if __name__ == "__main__":
    raise SystemExit(main())
