"""CIFAR-10 for training, without torch: the training images as arrays, the hold-out a run never
trains on, the images int8 models are calibrated on, and the weights a continuation starts from."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from ..spec import CIFAR10_CLASSES

__all__ = [
    "calibration_indices",
    "initial_weights",
    "jpeg_copies",
    "read_split",
    "split_holdout",
]


def read_split(data: Path, split: str, limit_per_class: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (N, 32, 32, 3) RGB images and int64 labels of DATA/<split>, in class then file order. DATA
    is this project's layout (model_store.cifar10.layout makes it from any form a user holds)."""
    files: dict[str, list[tuple[str, bytes]]] = {name: [] for name in CIFAR10_CLASSES}
    folder, archive = data / split, data / f"{split}-jpeg.tar.gz"
    if folder.is_dir():
        for name in CIFAR10_CLASSES:
            files[name] = [(p.name, p.read_bytes()) for p in sorted((folder / name).glob("*.jpg"))[:limit_per_class]]
    elif archive.is_file():
        with tarfile.open(archive) as tar:
            for member in tar:
                parts = Path(member.name).parts
                wanted = member.isfile() and len(parts) == 3 and parts[1] in files and parts[2].endswith(".jpg")
                if wanted and (file := tar.extractfile(member)) is not None:
                    files[parts[1]].append((parts[2], file.read()))
    images, labels = [], []
    for label, name in enumerate(CIFAR10_CLASSES):
        for _, data_bytes in sorted(files[name])[:limit_per_class]:
            with Image.open(io.BytesIO(data_bytes)) as image:
                images.append(np.asarray(image.convert("RGB"), dtype=np.uint8))
            labels.append(label)
    if not images:
        raise SystemExit(f"train: error: no images in {folder}/<class>/*.jpg or {archive}")
    return np.stack(images), np.asarray(labels, dtype=np.int64)


def split_holdout(labels: np.ndarray, per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices to train on and indices held out: `per_class` of each class, drawn with `seed`."""
    rng = np.random.default_rng(seed)
    held = [rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in np.unique(labels)]
    holdout = np.sort(np.concatenate(held))
    return np.setdiff1d(np.arange(len(labels)), holdout), holdout


def calibration_indices(labels: np.ndarray, train_idx: np.ndarray, per_class: int) -> np.ndarray:
    """The first `per_class` images of each class among `train_idx` (outside the hold-out): what the int8
    models are calibrated on (ship_weights.py, quantize_aware.py)."""
    return np.concatenate([train_idx[labels[train_idx] == c][:per_class] for c in np.unique(labels)])


def initial_weights(source: str) -> tuple[dict[str, np.ndarray], str]:
    """The weights a continuation starts from, and their sha256: `default` (the shipped weights), a
    .safetensors file written like them, or a .pth checkpoint."""
    if source == "default" or source.endswith(".safetensors"):
        # lazy: the registry brings BentoML and OpenVINO, which a run from scratch does without (a GPU machine has
        # neither: docs/training.md#on-a-gpu)
        from ..registry import embedded_default

        checkpoint = embedded_default() if source == "default" else embedded_default(shipped=Path(source))
    else:
        from ..pth import read_checkpoint  # torch: only for a .pth

        checkpoint = read_checkpoint(source)
    return checkpoint.state_dict, checkpoint.sha256


def jpeg_copies(exact_labels: np.ndarray, jpeg_labels: np.ndarray) -> np.ndarray:
    """Where read_split's test JPEGs hold the exact images: image i of class c is test/<c>/k.jpg, k counting the
    earlier test images of class c (the data README's rule); the JPEGs are in class, then file order."""
    earlier = np.array([(exact_labels[:i] == c).sum() for i, c in enumerate(exact_labels)], dtype=np.int64)
    return np.searchsorted(jpeg_labels, exact_labels) + earlier
