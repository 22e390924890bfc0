"""The embedded default is the file the package ships, and it scores what its header says."""

from __future__ import annotations

import hashlib

import numpy as np
from PIL import Image

from model_store import ModelSpec, preprocess_batch
from model_store.conversion import build_ir
from model_store.openvino_ir import compile_ir
from model_store.registry import SHIPPED_WEIGHTS, embedded_default


def test_embedded_default_is_the_shipped_model_and_scores_what_its_header_says(exact_images):
    checkpoint = embedded_default()
    assert checkpoint.sha256 == hashlib.sha256(SHIPPED_WEIGHTS.read_bytes()).hexdigest()
    assert 6.5e6 < SHIPPED_WEIGHTS.stat().st_size < 7.5e6  # fp32, about 7 MB
    spec = ModelSpec()
    # fp32 through OpenVINO: the torch network's function (tests/unit/test_conversion.py), faster here.
    run = compile_ir(build_ir(spec, {k: v.numpy() for k, v in checkpoint.state_dict.items()}), "fp32")
    images, labels = exact_images
    batch = preprocess_batch([Image.fromarray(i) for i in images], spec)
    predicted = np.concatenate([run(batch[i : i + 256]).argmax(1) for i in range(0, len(batch), 256)])
    top1 = float((predicted == labels).mean() * 100)
    assert abs(top1 - float(checkpoint.metadata["test_top1_exact"])) < 0.05  # recomputed here, not copied
