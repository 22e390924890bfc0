"""Register a PyramidNet checkpoint in the BentoML model store.

    python scripts/save_model.py                                  # the embedded default
    python scripts/save_model.py --checkpoint best_pyramidnet_model.pth --label team=vision
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from bentoml.exceptions import BentoMLException

from model_store import (
    DEFAULT_MODEL_NAME,
    embedded_default,
    read_checkpoint,
    register,
)


def _label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    return key, value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, help="raw state_dict or {'model_state_dict': ...} file; "
                        "default: the embedded default model")
    parser.add_argument("--name", default=DEFAULT_MODEL_NAME, help="model store name (default: %(default)s)")
    parser.add_argument("--label", type=_label, action="append", default=[], metavar="KEY=VALUE",
                        help="model store label; repeatable")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")

    try:
        checkpoint = embedded_default() if args.checkpoint is None else read_checkpoint(args.checkpoint)
        model = register(checkpoint, name=args.name, labels=dict(args.label))
    except (ValueError, BentoMLException) as e:  # CheckpointError, RegistrationError, bad tag or label
        print(f"save_model: error: {e}", file=sys.stderr)
        return 1

    meta = model.info.metadata
    print(model.tag)
    print(f"  source      {meta['source']}")
    print(f"  sha256      {meta['source_sha256']}")
    print(f"  parameters  {meta['parameters']:,}")
    if "best_val_acc" in meta:
        print(f"  accuracy    {meta['best_val_acc']} (best_val_acc, epoch {meta.get('epoch', '?')})")
    if not meta["trained"]:
        print("  WARNING     untrained random-init weights: predictions are meaningless "
              "(register a trained checkpoint with --checkpoint)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
