"""Register a PyramidNet checkpoint in the BentoML model store.

    python scripts/save_model.py                                  # the embedded default
    python scripts/save_model.py --checkpoint best_pyramidnet_model.pth --label team=vision
    python scripts/save_model.py --checkpoint best_pyramidnet_model.pth --eval-images /tmp/test
    python scripts/save_model.py --calibration-images /tmp/train        # add the int8 model (NNCF)

--eval-images measures top-1 on a labelled folder (<class>/<image>, CIFAR-10 class names) through
the serving preprocessing and the CPU's runtime at fp32 before registering, and records it: what
backs `"trained": true` in /model_info. Without a measurement the service reports `"trained": null`
with a warning.

Registering the embedded default needs no torch; reading a .pth (--checkpoint) does
(`make install-torch`).

Registration also stores the OpenVINO IR the CPU serves (fp32; bf16 is the same IR at run time).
--calibration-images adds the int8 IR, quantized by NNCF on 30 images of each class of a labelled
folder: training images, never the test images the model is measured on. A model already stored
gets it added.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import logging
import os
import sys
from pathlib import Path

from bentoml.exceptions import BentoMLException

from model_store import DEFAULT_MODEL_NAME, ModelSpec, decode_image, preprocess_batch
from model_store.checkpoint import Checkpoint, stored_weights
from model_store.conversion import CALIBRATION_PER_CLASS, ir_classifier
from model_store.evaluation import labelled_images, measure, verdict
from model_store.extras import has_torch, needs_torch
from model_store.registry import embedded_default, register

MAX_PIXELS = 10**8


def _label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    return key, value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--checkpoint",
        type=Path,
        help="raw state_dict or {'model_state_dict': ...} file; default: the embedded default model",
    )
    parser.add_argument("--name", default=DEFAULT_MODEL_NAME, help="model store name (default: %(default)s)")
    parser.add_argument(
        "--label", type=_label, action="append", default=[], metavar="KEY=VALUE", help="model store label; repeatable"
    )
    parser.add_argument("--eval-images", type=Path, metavar="DIR", help="measure top-1 on DIR/<class>/* first")
    parser.add_argument(
        "--calibration-images",
        type=Path,
        metavar="DIR",
        help="add the int8 model, calibrated on DIR/<class>/* (training images)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")

    if args.calibration_images is not None and importlib.util.find_spec("nncf") is None:
        print(
            "save_model: error: --calibration-images needs NNCF: pip install 'pyramidnet-bento[int8]'", file=sys.stderr
        )
        return 1
    if args.checkpoint is not None and not has_torch():
        print(f"save_model: error: {needs_torch('reading a .pth checkpoint')}", file=sys.stderr)
        return 1
    try:
        checkpoint = embedded_default() if args.checkpoint is None else _read_pth(args.checkpoint)
        measured = None
        if args.eval_images is not None:
            spec = ModelSpec()
            weights = stored_weights(spec, checkpoint.state_dict)
            measured = measure(ir_classifier(spec, weights, tag=checkpoint.source), args.eval_images)
        calibration = None
        if args.calibration_images is not None:
            paths, _ = labelled_images(
                args.calibration_images, ModelSpec().classes, limit_per_class=CALIBRATION_PER_CLASS
            )
            calibration = preprocess_batch([decode_image(p, max_pixels=MAX_PIXELS) for p in paths], ModelSpec())
        with contextlib.redirect_stdout(sys.stderr):  # NNCF's progress bars: stdout is the tag, then the facts
            model = register(
                checkpoint,
                name=args.name,
                labels=dict(args.label),
                measured=measured,
                calibration=calibration,
                calibrated_on=str(args.calibration_images),
            )
    except (ValueError, BentoMLException) as e:  # CheckpointError, RegistrationError, bad tag, label or folder
        print(f"save_model: error: {e}", file=sys.stderr)
        return 1

    meta = model.info.metadata
    print(model.tag)
    print(f"  source      {meta['source']}")
    print(f"  sha256      {meta['source_sha256']}")
    print(f"  parameters  {meta['parameters']:,}")
    if "best_val_acc" in meta:
        print(f"  claimed     {meta['best_val_acc']} (the checkpoint's best_val_acc, epoch {meta.get('epoch', '?')})")
    if "measured_top1" in meta:
        measured = f"top-1 {meta['measured_top1']} % on {meta['measured_images']} images in {meta['measured_on']}"
        print(f"  measured    {measured}")
    trained, warning = verdict(meta, ModelSpec().num_classes)
    print(f"  trained     {'unknown' if trained is None else str(trained).lower()}")
    if warning:
        print(f"  WARNING     {warning}")
    return 0


def _read_pth(path: Path) -> Checkpoint:
    from model_store.pth import read_checkpoint  # lazy: torch, which only reading a .pth needs

    return read_checkpoint(path)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # the reader left early (`| head -n1`): the model is registered, the rest unread
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit flush cannot fail again
        sys.exit(0)
