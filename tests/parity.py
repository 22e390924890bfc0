"""Served against offline: the probabilities a server answered, and the offline model's for the same files."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from model_store import CIFAR10_CLASSES, Classifier, decode_image, preprocess_batch

# Largest difference in probability allowed between the service and the offline model.
PARITY = 1e-5


def offline_probabilities(offline: Classifier, paths: list[Path]) -> np.ndarray:
    images = [decode_image(p, max_pixels=10**6) for p in paths]
    return offline.predict_proba(preprocess_batch(images, offline.spec))


def served_probabilities(results: list[dict]) -> np.ndarray:
    return np.array([[r["probabilities"][c] for c in CIFAR10_CLASSES] for r in results])
