"""Inference backends: every one stays within 1e-5 of eager PyTorch on 400 pixel-exact test images.

The backends that build or compile the whole network before it runs (`compile`: torch.compile with
its C++ code generation; `onnx`: the export) are held to the same bound on a PyramidNet of the same
code with one block per stage: it goes through every line of their wiring (fusing, channels_last,
dynamic batch, ONNX Runtime) in a fraction of the time the 110-layer network's build takes.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model_store import Classifier, ModelSpec, load_classifier, preprocess_batch
from model_store.architecture import from_spec
from model_store.backends import torch_classifier
from model_store.imaging import normalize
from model_store.inference import softmax
from model_store.options import BACKENDS

WHOLE_NETWORK_BUILDS = ("compile", "onnx")

TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def exact_batch(exact_images: tuple[np.ndarray, np.ndarray], offline: Classifier) -> np.ndarray:
    """The first 400 pixel-exact test images, normalised: batches of 1, 7, 128, 128 and 136."""
    images, _ = exact_images
    return normalize(images[:400], offline.spec)


@pytest.fixture(scope="module")
def eager_probabilities(default_model, exact_batch: np.ndarray) -> np.ndarray:
    return load_classifier(default_model, "cpu", backend="eager").predict_proba(exact_batch)


def in_batcher_sizes(classifier: Classifier, batch: np.ndarray) -> np.ndarray:
    """Uneven batch sizes, as the batcher forms them: 1, then 7, then the rest in 128s."""
    cuts = [1, 8, *range(136, len(batch), 128)]
    return np.concatenate([classifier.predict_proba(part) for part in np.split(batch, cuts)])


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b not in ("eager", *WHOLE_NETWORK_BUILDS)])
def test_backend_matches_eager_on_the_exact_test_images(default_model, backend, exact_batch, eager_probabilities):
    probabilities = in_batcher_sizes(
        load_classifier(default_model, "cpu", backend=backend, precision="fp32"), exact_batch
    )
    assert probabilities.shape == eager_probabilities.shape == (len(exact_batch), 10)
    assert np.abs(probabilities - eager_probabilities).max() < TOLERANCE
    assert (probabilities.argmax(1) == eager_probabilities.argmax(1)).all()


@pytest.mark.parametrize("backend", WHOLE_NETWORK_BUILDS)
def test_a_backend_that_builds_the_whole_network_matches_eager_on_the_exact_test_images(backend, exact_batch):
    torch.manual_seed(7)
    spec = ModelSpec(num_layers=1)
    module = from_spec(spec).eval()
    with torch.inference_mode():
        expected = softmax(module(torch.from_numpy(exact_batch)).numpy())
    classifier = torch_classifier(
        module, spec, tag="small", metadata={}, device="cpu", backend=backend, precision="fp32"
    )
    probabilities = in_batcher_sizes(classifier, exact_batch)
    assert probabilities.shape == (len(exact_batch), 10)
    assert np.abs(probabilities - expected).max() < TOLERANCE
    assert (probabilities.argmax(1) == expected.argmax(1)).all()


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
