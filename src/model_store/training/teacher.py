"""A teacher for distillation: the flip-averaged probabilities of an ensemble of trained weights on
the training images, through OpenVINO in fp32 (no torch). scripts/teacher.py caches them;
model_store.training.run distils from the cache."""

from __future__ import annotations

import numpy as np

from ..conversion import build_ir
from ..imaging import normalize
from ..inference import softmax
from ..openvino_ir import compile_ir
from ..spec import ModelSpec
from .data import initial_weights

BATCH = 500


def teacher_probabilities(sources: list[str], images: np.ndarray, spec: ModelSpec) -> tuple[np.ndarray, list[str]]:
    """The flip-averaged ensemble's probabilities of uint8 (N, 32, 32, 3) images, and each source's sha256."""
    x = normalize(images, spec)
    total, shas = np.zeros((len(x), spec.num_classes), dtype=np.float64), []
    for source in sources:
        weights, sha = initial_weights(source)
        run = compile_ir(build_ir(spec, weights), "fp32")
        for i in range(0, len(x), BATCH):
            batch = x[i : i + BATCH]
            total[i : i + BATCH] += softmax(run(batch)) + softmax(run(np.ascontiguousarray(batch[..., ::-1])))
        shas.append(sha)
    return (total / (2 * len(sources))).astype(np.float32), shas
