"""The embedded default is the file the package ships, and it scores what its header says."""

from __future__ import annotations

import hashlib

import numpy as np
from PIL import Image

from model_store import ModelSpec, preprocess_batch
from model_store.conversion import build_ir
from model_store.inference import softmax
from model_store.openvino_ir import Int8Accuracy, compile_ir, ir_path
from model_store.registry import SHIPPED_INT8, SHIPPED_WEIGHTS, embedded_default, int8_belongs_to


def test_embedded_default_is_the_shipped_model_and_scores_what_its_header_says(exact_images):
    checkpoint = embedded_default()
    assert checkpoint.sha256 == hashlib.sha256(SHIPPED_WEIGHTS.read_bytes()).hexdigest()
    assert 6.5e6 < SHIPPED_WEIGHTS.stat().st_size < 7.5e6  # fp32, about 7 MB
    spec = ModelSpec()
    # fp32 through OpenVINO: the torch network's function (tests/unit/test_conversion.py), faster here.
    run = compile_ir(build_ir(spec, checkpoint.state_dict), "fp32")
    images, labels = exact_images
    batch = preprocess_batch([Image.fromarray(i) for i in images], spec)
    predicted = np.concatenate([run(batch[i : i + 256]).argmax(1) for i in range(0, len(batch), 256)])
    top1 = float((predicted == labels).mean() * 100)
    assert abs(top1 - float(checkpoint.metadata["test_top1_exact"])) < 0.05  # recomputed here, not copied


def test_the_shipped_int8_model_is_made_from_the_shipped_weights_and_stored_with_them(default_model, exact_images):
    checkpoint = embedded_default()
    assert checkpoint.int8_ir == SHIPPED_INT8
    assert int8_belongs_to(SHIPPED_INT8, checkpoint)  # the sha256 of the weights it was made from
    stored = ir_path(default_model.path, "int8")
    assert stored.read_bytes() == SHIPPED_INT8.read_bytes()
    assert stored.with_suffix(".bin").read_bytes() == SHIPPED_INT8.with_suffix(".bin").read_bytes()
    assert SHIPPED_INT8.stat().st_size + SHIPPED_INT8.with_suffix(".bin").stat().st_size < 4e6

    measured = Int8Accuracy.stored(default_model.path)
    assert (measured.images, measured.on) == (1000, "held-out training images")
    # Its fp32 side is the training run's own hold-out score: the same 1,000 images, split again.
    assert measured.fp32_top1 == float(checkpoint.metadata["holdout_top1"])
    assert measured.losses - measured.gains == round((measured.fp32_top1 - measured.int8_top1) * measured.images / 100)

    # It is an int8 model of these weights: close to fp32 on the exact test images, not equal.
    spec = ModelSpec()
    batch = preprocess_batch([Image.fromarray(i) for i in exact_images[0][:256]], spec)
    int8 = softmax(compile_ir(stored, "int8")(batch))
    fp32 = softmax(compile_ir(ir_path(default_model.path, "fp32"), "fp32")(batch))
    assert (int8.argmax(1) == fp32.argmax(1)).mean() > 0.97
    assert 0 < np.abs(int8 - fp32).max() < 0.9
