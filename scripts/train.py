"""Train PyramidNet-110 (alpha 48) on CIFAR-10 on the CPU or a CUDA GPU, in pieces that resume step for step.

    python scripts/train.py --data ../shared/data/cifar10 --run runs/pyramidnet110-cutout --epochs 120 --cutout 16
    python scripts/train.py --data ../shared/data/cifar10 --run runs/pyramidnet110-cutout --epochs 120 --cutout 16 \
        --resume

DATA is a folder holding train/<class>/*.jpg and test/<class>/*.jpg, or the archives
train-jpeg.tar.gz and test-jpeg.tar.gz (../shared/data/cifar10 as it is). The images are decoded
once into uint8 tensors; augmentation is a random crop of the 4-pixel zero-padded image and a
horizontal flip, and with --cutout N a random N x N square set to the mean colour.

The recipe (a short schedule): SGD with Nesterov momentum 0.9 at batch 128, a linear warm-up then
linear decay to zero, the learning rate a function of the global step alone; label smoothing 0.1;
weight decay on conv and linear weights only; the last BN of every residual block starts at zero,
so each block starts as the identity; an exponential moving average (EMA) of the weights.
Where the device computes bf16 natively (AVX512_BF16 or AMX on a CPU, Ampere or later on a GPU), forward
and backward run under bf16 autocast with fp32 master weights: 1.8x fp32 on such a CPU. Elsewhere they run
in fp32: emulated, bf16 ran at 0.07x fp32 on an AVX2-only CPU (`python -m bench.train_step` measures both).

`--device auto` trains on CUDA where torch sees a GPU. There the images and their augmentation are held on
the GPU and the network runs channels-last; `--compile` adds torch.compile where `python -m bench.gpu` shows
that it pays. The augmentation's random draws come from the run's CPU generator on every device, so a run
may move between a GPU and a CPU (the same recipe and draws; bit for bit only on the device it began on).
The GPU path is untested on a GPU: none has been lent to this project yet (docs/training.md#on-a-gpu).

`--blocks-per-stage` (18: PyramidNet-110, what the service serves) makes a smaller PyramidNet for a
quick run. `--holdout-per-class` images of the training set are never trained on. The run ships the final
weights, raw or EMA, whichever scores higher on them; the test set is reported, never used to
choose. The run folder holds state.pt (everything a piece needs to continue exactly: weights, EMA,
optimizer, step, the epoch's order, RNG, the epoch's running sums), history.jsonl (one line per
epoch), and when the last epoch ends, model.pth ({"model_state_dict", "epoch", "best_val_acc"},
the format scripts/save_model.py registers; best_val_acc is the hold-out top-1) and summary.json.
A piece ends cleanly at `--time-limit-min`, on SIGTERM or on SIGINT, after the step in progress.

A continuation starts from trained weights instead of a fresh network (docs/training.md#the-continuation):

    python scripts/train.py --data ../shared/data/cifar10 --run runs/swa --init default --epochs 8 --cutout 16 \
        --schedule constant --lr 0.015 --swa --teacher runs/teacher.npz

--init takes the shipped weights (`default`), a .safetensors or a .pth. --schedule constant holds
--lr throughout. --swa keeps an equal-weight average of the weights at every epoch's end (stochastic
weight averaging), its batch-norm statistics recomputed on 10,000 training images augmented as in
training before it is evaluated, so every epoch's end leaves an averaged model ready. --teacher distils from cached
probabilities (scripts/teacher.py): --distill of the loss is the KL divergence to the teacher at
temperature 1, the rest the label-smoothed cross-entropy. The run ships whichever of the final, EMA
and averaged weights scores highest on the hold-out.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path

from model_store import cifar10
from model_store.extras import torch_required

with torch_required("scripts/train.py"):
    from model_store.training.run import Piece, Recipe, train

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data",
        type=Path,
        required=True,
        help="folder with train/ and test/, or their .tar.gz; or the official cifar-10-binary.tar.gz, or its folder",
    )
    parser.add_argument("--run", type=Path, required=True, help="folder for state, history and the final model")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.1, help="peak learning rate")
    parser.add_argument("--warmup-epochs", type=float, default=2)
    parser.add_argument("--weight-decay", type=float, default=5e-4)
    parser.add_argument("--label-smoothing", type=float, default=0.1)
    parser.add_argument("--ema-decay", type=float, default=0.999, help="per step")
    parser.add_argument("--holdout-per-class", type=int, default=100, help="training images never trained on")
    parser.add_argument("--limit-per-class", type=int, help="use only this many images per class (smoke runs)")
    parser.add_argument(
        "--precision",
        choices=("auto", "bf16", "fp32"),
        default="auto",
        help="auto: bf16 where the device computes it natively (AVX512_BF16 or AMX, a GPU since Ampere), else fp32",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cutout", type=int, default=0, help="Cutout square side in pixels (16 is usual); 0: none")
    parser.add_argument(
        "--blocks-per-stage",
        type=int,
        default=18,
        help="residual blocks per stage: 18 is PyramidNet-110, what the service serves; fewer for a quick run",
    )
    parser.add_argument(
        "--init", help="continue from trained weights: default (the shipped ones), .safetensors or .pth"
    )
    parser.add_argument(
        "--schedule",
        choices=("linear", "constant"),
        default="linear",
        help="linear: warm-up then decay; constant: --lr",
    )
    parser.add_argument("--swa", action="store_true", help="average the weights at every epoch's end (SWA)")
    parser.add_argument("--teacher", type=Path, help="distil from these cached probabilities (scripts/teacher.py)")
    parser.add_argument("--distill", type=float, default=0.5, help="with --teacher: the KL term's share of the loss")
    parser.add_argument("--test-every", type=int, default=5, help="epochs between test-set evaluations")
    parser.add_argument("--resume", action="store_true", help="continue from RUN/state.pt")
    parser.add_argument("--time-limit-min", type=float, help="end this piece after the first step past it")
    parser.add_argument(
        "--device", default="auto", help="auto (CUDA where torch sees a GPU, else the CPU), cpu, cuda or cuda:N"
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile the network for the training steps")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    piece = Piece(
        data=cifar10.layout(args.data, REPO / cifar10.CACHE),
        run=args.run,
        command=shlex.join(["python", "scripts/train.py", *(sys.argv[1:] if argv is None else argv)]),
        resume=args.resume,
        init=args.init,
        teacher=args.teacher,
        test_every=args.test_every,
        time_limit_min=args.time_limit_min,
        device=args.device,
        compile=args.compile,
    )
    return train(piece, recipe_of(args))


def recipe_of(args: argparse.Namespace) -> Recipe:
    """The run's recipe from the command line (bench.gpu times the shipped one's step from it)."""
    return Recipe(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        warmup_epochs=args.warmup_epochs,
        weight_decay=args.weight_decay,
        label_smoothing=args.label_smoothing,
        ema_decay=args.ema_decay,
        holdout_per_class=args.holdout_per_class,
        limit_per_class=args.limit_per_class,
        precision=args.precision,
        seed=args.seed,
        cutout=args.cutout,
        blocks_per_stage=args.blocks_per_stage,
        schedule=args.schedule,
        swa=args.swa,
        distill=args.distill,
    )


if __name__ == "__main__":
    raise SystemExit(main())
