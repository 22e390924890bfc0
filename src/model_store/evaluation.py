"""What backs a model: top-1 measured on labelled images, and the verdict and warning a model's
metadata supports (what `/model_info` and the server's log say about it)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .imaging import decode_image, preprocess_batch
from .inference import Classifier

BATCH = 256
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def labelled_images(
    root: Path, classes: Sequence[str], limit_per_class: int | None = None
) -> tuple[list[Path], np.ndarray]:
    """Image files under root/<class>/ (the folder names are class names) and their labels."""
    paths, labels = [], []
    for label, name in enumerate(classes):
        files = sorted(p for p in (root / name).glob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[:limit_per_class]
        paths += files
        labels += [label] * len(files)
    if not paths:
        raise ValueError(f"no images under {root}/<class>/ for the classes {', '.join(classes)}")
    return paths, np.asarray(labels)


def probabilities(model: Classifier, paths: Sequence[Path]) -> np.ndarray:
    """(N, C) probabilities of image files through the serving decode and preprocessing."""
    out = []
    for i in range(0, len(paths), BATCH):
        images = [decode_image(p, max_pixels=10**8) for p in paths[i : i + BATCH]]
        out.append(model.predict_proba(preprocess_batch(images, model.spec)))
    return np.concatenate(out)


def measure(model: Classifier, root: Path) -> dict[str, Any]:
    """Top-1 on a labelled folder, as model metadata: measured_top1 (%), measured_images, measured_on."""
    paths, labels = labelled_images(root, model.spec.classes)
    top1 = float((probabilities(model, paths).argmax(1) == labels).mean() * 100)
    return {"measured_top1": round(top1, 2), "measured_images": len(paths), "measured_on": str(root)}


def verdict(metadata: Mapping[str, Any], num_classes: int) -> tuple[bool | None, str | None]:
    """(trained, warning) that the metadata backs: True only with a measured top-1 well above chance
    (twice it), False for a measurement at chance, None when nothing was measured."""
    if "measured_top1" in metadata:
        top1, chance = float(metadata["measured_top1"]), 100 / num_classes
        if top1 > 2 * chance:
            return True, None
        return False, (
            f"measured top-1 is {top1:.1f} % on {metadata['measured_images']} labelled images, "
            f"no better than chance ({chance:.0f} %): its predictions are meaningless"
        )
    claim = f"; the checkpoint claims best_val_acc {metadata['best_val_acc']}" if "best_val_acc" in metadata else ""
    return None, (
        "nothing backs this model: no accuracy was measured when it was registered "
        f"(scripts/save_model.py --eval-images DIR measures one){claim}"
    )
