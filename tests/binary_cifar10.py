"""CIFAR-10's official binary version, written from images held here: for the loader's tests, and to run
the whole suite on a binary archive where the official download cannot be fetched.

    python -m tests.binary_cifar10 OUT.tar.gz [--from ../shared/data/cifar10]

The whole-archive form takes this project's layout: the first 1,017 test images with their original
pixels (test-exact-first1017.npz), the others and the training images decoded from the JPEG copies,
each class's images in their order. Only the first 1,017 test images are the official pixels.
"""

from __future__ import annotations

import argparse
import io
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from model_store import CIFAR10_CLASSES
from model_store.cifar10 import BATCHES, EXACT


def records(images: np.ndarray, labels: np.ndarray) -> bytes:
    """The binary version's records: a label byte, then the red, green and blue planes, row by row."""
    planes = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
    return np.concatenate([labels.astype(np.uint8)[:, None], planes], axis=1).tobytes()


def write_archive(path: Path, batches: dict[str, bytes]) -> Path:
    """`cifar-10-binary.tar.gz` as the download lays it out: cifar-10-batches-bin/<batch>.bin."""
    with tarfile.open(path, "w:gz") as tar:
        for name, data in batches.items():
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _decoded(archive: Path) -> dict[str, list[np.ndarray]]:
    """Each class's images of a JPEG archive, decoded, in file order."""
    by_class: dict[str, list[tuple[str, bytes]]] = {name: [] for name in CIFAR10_CLASSES}
    with tarfile.open(archive) as tar:
        for member in tar:
            parts = Path(member.name).parts
            if member.isfile() and len(parts) == 3 and parts[1] in by_class:
                by_class[parts[1]].append((parts[2], tar.extractfile(member).read()))
    return {
        name: [np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.uint8) for _, data in sorted(files)]
        for name, files in by_class.items()
    }


def _interleaved(by_class: dict[str, list[np.ndarray]], taken: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """The images after the first `taken[c]` of each class, one class after another in turn."""
    images, labels = [], []
    queues = [by_class[name][taken[c] :] for c, name in enumerate(CIFAR10_CLASSES)]
    for k in range(max(len(q) for q in queues)):
        for label, queue in enumerate(queues):
            if k < len(queue):
                images.append(queue[k])
                labels.append(label)
    return np.stack(images), np.array(labels, dtype=np.int64)


def from_layout(folder: Path, out: Path) -> Path:
    exact = np.load(folder / EXACT)
    first, first_labels = exact["images"], exact["labels"]
    taken = [int((first_labels == c).sum()) for c in range(len(CIFAR10_CLASSES))]
    rest, rest_labels = _interleaved(_decoded(folder / "test-jpeg.tar.gz"), taken)
    test_images, test_labels = np.concatenate([first, rest]), np.concatenate([first_labels, rest_labels])
    train_images, train_labels = _interleaved(_decoded(folder / "train-jpeg.tar.gz"), [0] * len(CIFAR10_CLASSES))
    batches = {"test_batch.bin": records(test_images, test_labels)}
    for i, name in enumerate(BATCHES["train"]):
        part = slice(i * len(train_images) // 5, (i + 1) * len(train_images) // 5)
        batches[name] = records(train_images[part], train_labels[part])
    return write_archive(out, batches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--from", dest="source", type=Path, default=Path("../shared/data/cifar10"))
    args = parser.parse_args()
    print(from_layout(args.source, args.out))


if __name__ == "__main__":
    main()
