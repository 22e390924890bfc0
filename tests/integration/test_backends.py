"""Inference backends: every one stays within 1e-5 of eager PyTorch on the 1,017 pixel-exact test images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model_store import Classifier, load_classifier, preprocess_batch
from model_store.imaging import normalize
from model_store.options import BACKENDS

TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def exact_batch(exact_images: tuple[np.ndarray, np.ndarray], offline: Classifier) -> np.ndarray:
    images, _ = exact_images
    return normalize(images, offline.spec)


@pytest.fixture(scope="module")
def eager_probabilities(default_model, exact_batch: np.ndarray) -> np.ndarray:
    return load_classifier(default_model, "cpu", backend="eager").predict_proba(exact_batch)


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "eager"])
def test_backend_matches_eager_on_the_exact_test_images(default_model, backend, exact_batch, eager_probabilities):
    classifier = load_classifier(default_model, "cpu", backend=backend, precision="fp32")
    # Uneven batch sizes, as the batcher forms them: 1, then 7, then the rest in 128s.
    cuts = [1, 8, *range(136, len(exact_batch), 128)]
    probabilities = np.concatenate([classifier.predict_proba(part) for part in np.split(exact_batch, cuts)])
    assert probabilities.shape == eager_probabilities.shape == (1017, 10)
    assert np.abs(probabilities - eager_probabilities).max() < TOLERANCE
    assert (probabilities.argmax(1) == eager_probabilities.argmax(1)).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_gpu_autocast_keeps_top1_on_the_test_set(default_model, test_jpegs, precision):
    from model_store import decode_image

    paths = sorted(test_jpegs.glob("*/*.jpg"))
    fp32 = load_classifier(default_model, "cuda", precision="fp32")
    half = load_classifier(default_model, "cuda", precision=precision)
    batch = preprocess_batch([decode_image(p, max_pixels=1024) for p in paths], fp32.spec)
    reference = np.concatenate([fp32.predict_proba(part) for part in np.array_split(batch, 40)])
    probabilities = np.concatenate([half.predict_proba(part) for part in np.array_split(batch, 40)])
    agreement = (probabilities.argmax(1) == reference.argmax(1)).mean()
    assert agreement >= 0.999, f"top-1 agreement {agreement:.4%}"
    assert np.abs(probabilities - reference).max() < (5e-3 if precision == "fp16" else 3e-2)
