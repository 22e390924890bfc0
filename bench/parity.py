"""Served vs offline probabilities on real CIFAR-10 test JPEGs: max |delta p| and top-1 agreement.

    python -m bench.parity --url http://127.0.0.1:3000 --model pyramidnet-cifar10:latest --images 1000

The offline side loads the same stored model in this process (CPU) and runs the same preprocessing.
"""

from __future__ import annotations

import argparse
import tarfile
import tempfile
from pathlib import Path

import bentoml
import numpy as np

from model_store import decode_image, load_classifier, preprocess_batch

from .hey import DATA_HELP, jpeg_archive


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:3000")
    parser.add_argument("--model", default="pyramidnet-cifar10:latest", help="store tag the server serves")
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--data", type=Path, help=DATA_HELP)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(jpeg_archive(args.data)) as tar:
            tar.extractall(tmp, filter="data")
        paths = sorted(Path(tmp).glob("test/*/*.jpg"))[:: max(1, 10_000 // args.images)][: args.images]
        offline = load_classifier(args.model, device="cpu")
        expected = np.concatenate(
            [
                offline.predict_proba(
                    preprocess_batch([decode_image(p, max_pixels=10**6) for p in paths[i : i + 64]], offline.spec)
                )
                for i in range(0, len(paths), 64)
            ]
        )
        with bentoml.SyncHTTPClient(args.url, timeout=300) as client:
            results = [r for i in range(0, len(paths), 64) for r in client.classify_batch(images=paths[i : i + 64])]

    served = np.array([[r["probabilities"][c] for c in offline.spec.classes] for r in results])
    assert {r["model"] for r in results} == {offline.tag}, "the server serves another model than --model"
    print(f"images            {len(paths)}")
    print(f"max |delta p|     {np.abs(served - expected).max():.3g}")
    print(f"top-1 agreement   {np.mean(served.argmax(1) == expected.argmax(1)) * 100:.2f} %")


if __name__ == "__main__":
    main()
