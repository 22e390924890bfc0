"""int8 with fp32 re-checking the images near a tie: how many images each margin sends to fp32, and how far
the answers then land from fp32's, judged on training images (the test set reported, never chosen by).

    python -m bench.int8_recheck              # about 13 minutes on 2 cores of a Zen 1 EPYC

The embedded default's fp32 network (built from the shipped weights) and its shipped int8 model each run once
over the training run's hold-out (train.py's split, same seed) and its mirror images (2,000 views no training
step saw), `--train-images` other training images, and the 10,000 test JPEGs. From the logits kept, for each
margin: the answer is int8's where int8's top two logits are at least the margin apart, fp32's elsewhere.
Prints how much int8 moves its top class's lead over the other classes (quantiles, on the training images),
then per margin the share re-checked, the images fp32 alone and the cascade alone get right, the drop and its
one-sided 95 % upper bound (paired.upper_bound_pp). A figure, not a test: docs/performance.md#precision.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from model_store import ModelSpec
from model_store.conversion import build_ir
from model_store.imaging import normalize
from model_store.openvino_ir import Runtime, compile_ir
from model_store.paired import only_right, upper_bound_pp
from model_store.registry import embedded_default
from model_store.training.data import read_split, split_holdout

from .hey import DATA_HELP, data_folder

MARGINS = (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0)


def logits(run: Runtime, images: np.ndarray) -> np.ndarray:
    return np.concatenate([run(images[i : i + 250]) for i in range(0, len(images), 250)])


def lead_change(int8: np.ndarray, fp32: np.ndarray) -> np.ndarray:
    """Per image, the most int8 moves its top class's lead over any other class: fp32 answers differently
    only where this exceeds int8's own lead over the runner-up."""
    top = int8.argmax(1)[:, None]
    lead_8, lead_32 = (np.take_along_axis(z, top, 1) - z for z in (int8, fp32))
    return np.abs(lead_8 - lead_32).max(1)


def cascade(int8: np.ndarray, fp32: np.ndarray, margin: float) -> tuple[np.ndarray, np.ndarray]:
    """The answers with fp32 re-checking the images whose int8 top two logits are under `margin` apart, and
    which images it re-checked."""
    top_two = np.sort(int8, 1)[:, -2:]
    near = top_two[:, 1] - top_two[:, 0] < margin
    return np.where(near[:, None], fp32, int8), near


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help=DATA_HELP)
    parser.add_argument("--holdout-per-class", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0, help="the training run's seed (its hold-out split)")
    parser.add_argument("--train-images", type=int, default=10_000, help="other training images, for the leads")
    parser.add_argument("--margins", type=float, nargs="+", default=MARGINS)
    args = parser.parse_args()

    spec, default = ModelSpec(), embedded_default()
    data = data_folder(args.data)
    x, y = read_split(data, "train")
    train_idx, holdout = split_holdout(y, args.holdout_per_class, args.seed)
    others = np.random.default_rng(7).permutation(train_idx)[: args.train_images]
    test_x, test_y = read_split(data, "test")
    held = normalize(x[holdout], spec)
    views = {
        "hold-out and mirror": (np.concatenate([held, held[..., ::-1]]), np.concatenate([y[holdout]] * 2)),
        "test (reported)": (normalize(test_x, spec), test_y),
    }
    fp32 = compile_ir(build_ir(spec, default.state_dict), "fp32")
    int8 = compile_ir(default.int8_ir, "int8")
    training = normalize(x[others], spec)
    leads = lead_change(logits(int8, training), logits(fp32, training))
    quantiles = ", ".join(f"{q:g}: {np.quantile(leads, q):.2f}" for q in (0.5, 0.9, 0.99, 0.999, 1))
    print(f"int8's change to its top class's lead, {len(others):,} training images, by quantile: {quantiles}")
    ran = {name: (logits(int8, images), logits(fp32, images), labels) for name, (images, labels) in views.items()}
    for name, (z8, z32, _) in ran.items():
        print(f"  {name}: at most {lead_change(z8, z32).max():.2f}")

    columns = (f"{name}: re-checked % | lost / gained | drop pp | bound pp" for name in ran)
    print("\n| margin | " + " | ".join(columns) + " |")
    print("| ---: |" + " ---: | ---: | ---: | ---: |" * len(ran))
    for margin in args.margins:
        cells = []
        for z8, z32, labels in ran.values():
            answers, near = cascade(z8, z32, margin)
            lost, gained = only_right(z32.argmax(1) == labels, answers.argmax(1) == labels)
            drop, bound = (lost - gained) * 100 / len(labels), upper_bound_pp(lost, gained, len(labels))
            cells.append(f"{near.mean() * 100:.1f} | {lost} / {gained} | {drop:.2f} | {bound:.2f}")
        print(f"| {margin:g} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
