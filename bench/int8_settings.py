"""NNCF settings for int8, judged on training images only: how far each lands from fp32.

    python -m bench.int8_settings --model pyramidnet-cifar10:7afb2e792399721b      # 12 to 16 minutes on 2 cores

The registered model's fp32 IR is quantized with each setting below and compared with fp32 on
images the int8 choice may look at: the training run's hold-out (`train.py --holdout-per-class`
images of the training set, never trained on: the same split, same seed), its mirror images (the
two are 2,000 views no training step saw: the images each precision alone gets right), and 5,000
other training images that no setting calibrates on. Prints the top-1 agreement with fp32 and the
probability differences. The test images are not used: a setting chosen here is then measured
once on them by `bench.precisions`. A figure, not a test.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import bentoml
import nncf
import numpy as np
import openvino

from model_store.conversion import CALIBRATION_PER_CLASS
from model_store.imaging import normalize
from model_store.inference import softmax
from model_store.openvino_ir import IR_DIR, IR_FILES, compile_ir
from model_store.paired import only_right
from model_store.spec import ModelSpec
from model_store.training.data import calibration_indices, read_split, split_holdout

from .hey import DATA_HELP, data_folder

REPO = Path(__file__).resolve().parents[1]


def probabilities(run, images: np.ndarray) -> np.ndarray:
    return softmax(np.concatenate([run(images[i : i + 64]) for i in range(0, len(images), 64)]))


def percent(agreeing: np.ndarray) -> str:
    return f"{agreeing.mean() * 100:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a registered model tag")
    parser.add_argument("--data", type=Path, help=DATA_HELP)
    parser.add_argument("--holdout-per-class", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0, help="the training run's seed (its hold-out split)")
    parser.add_argument("--only", nargs="+", help="run only the settings whose names contain one of these")
    args = parser.parse_args()

    per_class = CALIBRATION_PER_CLASS
    data = data_folder(args.data)
    x, y = read_split(data, "train")
    train_idx, holdout = split_holdout(y, args.holdout_per_class, args.seed)
    pool = np.random.default_rng(1).permutation(train_idx)
    checked, calibration_pool = pool[-5000:], pool[:-5000]
    spec = ModelSpec()
    # save_model.py's calibration: the first images of each class in file order, as read_split orders them
    first = np.concatenate([np.flatnonzero(y == c)[:per_class] for c in range(spec.num_classes)])
    size = f"{len(first):,}"
    # ship_weights.py's calibration for the shipped int8 model: as many, all outside the hold-out
    outside = calibration_indices(y, train_idx, per_class)
    advanced = nncf.quantization.advanced_parameters
    settings = {
        f"{size} (save_model.py), defaults": (first, {}),
        "1,000, defaults": (calibration_pool[:1000], {}),
        f"{size}, mixed preset": (first, {"preset": nncf.QuantizationPreset.MIXED}),
        f"{size}, full bias correction": (first, {"fast_bias_correction": False}),
        "1,000, mixed, full bias correction": (
            calibration_pool[:1000],
            {"preset": nncf.QuantizationPreset.MIXED, "fast_bias_correction": False},
        ),
        f"{size} outside the hold-out (ship_weights.py), defaults": (outside, {}),
        f"{size} outside the hold-out, SmoothQuant on convolutions (alpha 0.5)": (
            outside,
            {
                "advanced_parameters": advanced.AdvancedQuantizationParameters(
                    smooth_quant_alphas=advanced.AdvancedSmoothQuantParameters(convolution=0.5)
                )
            },
        ),
        f"{size} outside the hold-out, activation ranges from quantiles": (
            outside,
            {
                "advanced_parameters": advanced.AdvancedQuantizationParameters(
                    activations_range_estimator_params=nncf.quantization.range_estimator.RangeEstimatorParametersSet.MEAN_QUANTILE
                )
            },
        ),
        f"{size} outside the hold-out, overflow fix off (8-bit first layer)": (
            outside,
            {"advanced_parameters": advanced.AdvancedQuantizationParameters(overflow_fix=advanced.OverflowFix.DISABLE)},
        ),
    }

    xml = Path(bentoml.models.get(args.model).path_of(IR_DIR)) / IR_FILES["fp32"]
    held = normalize(x[holdout], spec)
    sets = {
        "hold-out": held,
        "mirrored hold-out": np.ascontiguousarray(held[..., ::-1]),
        "5,000 training": normalize(x[checked], spec),
    }
    fp32 = compile_ir(xml, "fp32")
    reference = {name: probabilities(fp32, images) for name, images in sets.items()}
    print(f"fp32 top-1 on the hold-out: {percent(reference['hold-out'].argmax(1) == y[holdout])} %\n")
    print(
        "| setting | hold-out top-1 % | agreement % | max abs Δp | hold-out and mirror: lost / gained, drop pp "
        "| 5,000 training: agreement % | mean abs Δp | seconds |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    graph = openvino.Core().read_model(xml)
    for name, (chosen, options) in settings.items():
        if args.only and not any(part in name for part in args.only):
            continue
        start = time.monotonic()
        samples = nncf.Dataset([image[None] for image in normalize(x[chosen], spec).astype(np.float32)])
        quantized = nncf.quantize(graph, samples, subset_size=len(chosen), **options)
        with tempfile.TemporaryDirectory() as scratch:
            out = Path(scratch) / "model-int8.xml"
            openvino.save_model(quantized, out, compress_to_fp16=False)
            int8 = compile_ir(out, "int8")
            p = {name: probabilities(int8, images) for name, images in sets.items()}
        held, ref_held = p["hold-out"], reference["hold-out"]
        train_p, ref_train = p["5,000 training"], reference["5,000 training"]
        views = ("hold-out", "mirrored hold-out")
        lost, gained = only_right(
            *(np.concatenate([q[k].argmax(1) == y[holdout] for k in views]) for q in (reference, p))
        )
        drop_pp = (lost - gained) * 100 / (len(views) * len(holdout))
        print(
            f"| {name} | {percent(held.argmax(1) == y[holdout])} | {percent(held.argmax(1) == ref_held.argmax(1))} "
            f"| {np.abs(held - ref_held).max():.3f} | {lost} / {gained}, {drop_pp:.2f} "
            f"| {percent(train_p.argmax(1) == ref_train.argmax(1))} "
            f"| {np.abs(train_p - ref_train).mean():.4f} | {time.monotonic() - start:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
