"""Make a trained checkpoint the package's embedded default (what `make serve` registers and serves).

    python scripts/ship_weights.py --checkpoint best_pyramidnet_model.pth \\
        --test-accuracy-jpeg 95.61 --test-accuracy-exact 95.87 \\
        --training-command "python scripts/train.py --data DATA --epochs 200" --data "CIFAR-10 train JPEGs (50,000)"

Writes src/model_store/weights/pyramidnet110-cifar10.safetensors: fp32, pickle-free, about 7 MB,
with the facts above in its header; scripts/save_model.py records them as model metadata.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from model_store import ModelSpec, read_checkpoint
from model_store.checkpoint import CheckpointError
from model_store.registry import SHIPPED_WEIGHTS, build_network, ship_weights


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--test-accuracy-jpeg", type=float, required=True, help="top-1 %% on the 10,000 test JPEGs")
    parser.add_argument("--test-accuracy-exact", type=float, required=True, help="top-1 %% on the 1,017 exact images")
    parser.add_argument("--training-command", required=True)
    parser.add_argument("--data", required=True, help="what the model was trained on")
    parser.add_argument("--out", type=Path, default=SHIPPED_WEIGHTS)
    args = parser.parse_args(argv)
    try:
        checkpoint = read_checkpoint(args.checkpoint)
        build_network(ModelSpec(), checkpoint.state_dict)
    except CheckpointError as e:
        print(f"ship_weights: error: {e}", file=sys.stderr)
        return 1
    path = ship_weights(
        checkpoint, args.out,
        test_accuracy_jpeg=str(args.test_accuracy_jpeg), test_accuracy_exact=str(args.test_accuracy_exact),
        training_command=args.training_command, data=args.data,
    )  # fmt: skip
    print(f"{path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
