"""The network as OpenVINO's IR, built from its weights with OpenVINO's graph API. Imports no torch.

The graph is architecture.py's forward pass written op for op (tests/unit/test_conversion.py holds
the two to 1e-5 on the pixel-exact test images). Building it reads the weights and nothing else,
so it needs no torch and is far faster than tracing the module and converting the trace
(docs/performance/serving.md#registration-building-the-ir). `ir_classifier` runs weights not yet stored.

Registration stores the result (registry.py); a model stored before registration kept it gets it
on its first load (`store_ir`, from loading.py); a network in memory asked to run through OpenVINO
is built the same way (backends.py). `quantize_ir` adds the int8 IR (NNCF).
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import bentoml
import numpy as np
import openvino
import openvino.opset13 as ops
import safetensors.numpy

from .checkpoint import Weights
from .inference import Classifier
from .openvino_ir import IR_DIR, IR_FILES, compile_ir
from .spec import STAGES, ModelSpec
from .store import WEIGHTS_FILE, read_spec

BN_EPS = 1e-5  # torch.nn.BatchNorm2d's default, which the network is trained with


def build_ir(spec: ModelSpec, weights: Weights) -> openvino.Model:
    """The PyramidNet `spec` describes with `weights`, as an fp32 OpenVINO model: float32
    (N, 3, S, S) normalised images -> (N, num_classes) logits."""
    side = spec.input_size
    images = ops.parameter([-1, 3, side, side], np.float32, name="images")
    x = _batch_norm(_conv(images, weights, "conv1"), weights, "bn1")
    for stage, name in enumerate(STAGES):
        for i in range(spec.num_layers):
            x = _block(x, weights, f"{name}.{i}", stride=2 if stage > 0 and i == 0 else 1)
    x = _named(ops.relu(_batch_norm(x, weights, "bn_out")), "relu_out")
    x = _named(ops.reduce_mean(x, _const(np.array([2, 3], dtype=np.int64)), keep_dims=False), "pool")
    logits = ops.add(
        _named(ops.matmul(x, _const(weights["fc_out.weight"]), transpose_a=False, transpose_b=True), "fc_out"),
        _const(weights["fc_out.bias"]),
    )
    return named_by_position(openvino.Model([ops.result(logits, name="logits")], [images], "pyramidnet"))


def named_by_position(graph: openvino.Model) -> openvino.Model:
    """The graph with the ops OpenVINO named by a counter of every op the process has made (Constant_6671,
    or a fused op's source, Multiply_85432) renamed by their position: otherwise the same weights would save
    a different IR in another process."""
    graph.set_friendly_name("pyramidnet")
    for index, op in enumerate(graph.get_ordered_ops()):
        if re.fullmatch(r"[A-Za-z][A-Za-z0-9]*_\d+", op.get_friendly_name()):
            op.set_friendly_name(f"{op.get_type_name()}_{index}")
    return graph


def ir_classifier(spec: ModelSpec, weights: Weights, *, tag: str) -> Classifier:
    """Weights not yet stored, run as the CPU serves them (OpenVINO, fp32): to measure a checkpoint
    before it is registered (save_model.py --eval-images)."""
    return Classifier(
        compile_ir(build_ir(spec, weights), "fp32"),
        spec,
        tag=tag,
        metadata={},
        device="cpu",
        backend="openvino",
        precision="fp32",
    )


def save_ir(graph: openvino.Model, folder: Path) -> Path:
    """Write an fp32 IR under `folder`/openvino; returns the .xml path."""
    xml = Path(folder) / IR_DIR / IR_FILES["fp32"]
    openvino.save_model(graph, xml, compress_to_fp16=False)  # fp32 weights: exact is the contract
    return xml


CALIBRATION_PER_CLASS = 30  # images of each class an int8 model is calibrated on: 300, NNCF's default size


def quantize_ir(xml: Path, calibration: np.ndarray, calibrated_on: str = "", out: Path | None = None) -> Path:
    """int8 post-training quantization of an fp32 IR (NNCF) calibrated on normalised images, saved
    beside it (or at `out`); returns the int8 .xml."""
    try:
        import nncf  # lazy: the `int8` extra, needed only when calibration images are given
    except ImportError:
        raise RuntimeError("int8 needs NNCF at registration: pip install 'pyramidnet-bento[int8]'") from None
    graph = openvino.Core().read_model(xml)
    samples = nncf.Dataset([image[None] for image in calibration.astype(np.float32)])
    quantized = nncf.quantize(graph, samples, subset_size=len(calibration))
    quantized.set_rt_info(f"{len(calibration)} images: {calibrated_on}", ["pyramidnet", "calibrated_on"])
    out = out or xml.with_name(IR_FILES["int8"])
    openvino.save_model(quantized, out, compress_to_fp16=False)
    return out


def store_ir(model: bentoml.Model) -> None:
    """Build the IR of a model stored before registration kept it, into its folder all at once."""
    with tempfile.TemporaryDirectory(dir=model.path) as scratch:
        weights = safetensors.numpy.load_file(model.path_of(WEIGHTS_FILE))
        xml = save_ir(build_ir(read_spec(model), weights), Path(scratch))
        try:
            os.rename(xml.parent, model.path_of(IR_DIR))
        except OSError:
            if not os.path.isdir(model.path_of(IR_DIR)):
                raise
            # another worker stored it first: the same conversion of the same weights


def _block(x: openvino.Node, weights: Weights, prefix: str, stride: int) -> openvino.Node:
    """ResidualBlock: BN-conv-BN-ReLU-conv-BN plus the zero-padded identity, no ReLU after the sum."""
    out = _conv(_batch_norm(x, weights, f"{prefix}.bn1"), weights, f"{prefix}.conv1", stride)
    out = _conv(
        _named(ops.relu(_batch_norm(out, weights, f"{prefix}.bn2")), f"{prefix}.relu"), weights, f"{prefix}.conv2"
    )
    out = _batch_norm(out, weights, f"{prefix}.bn3")
    added = weights[f"{prefix}.conv2.weight"].shape[0] - weights[f"{prefix}.bn1.weight"].shape[0]
    shortcut = x
    if added:  # the new channels of the identity are zeros (IdentityPadding)
        zeros = _const(np.array([0, 0, 0, 0], dtype=np.int64))
        ends = _const(np.array([0, added, 0, 0], dtype=np.int64))
        shortcut = ops.pad(shortcut, zeros, ends, "constant", _const(np.array(0, dtype=np.float32)))
    if stride == 2:
        shortcut = ops.avg_pool(shortcut, [2, 2], [0, 0], [0, 0], [2, 2], exclude_pad=True, rounding_type="ceil")
    return _named(ops.add(out, shortcut), f"{prefix}.add")


def _conv(x: openvino.Node, weights: Weights, name: str, stride: int = 1) -> openvino.Node:
    """A 3x3 convolution, padding 1, no bias."""
    conv = ops.convolution(x, _const(weights[f"{name}.weight"]), [stride, stride], [1, 1], [1, 1], [1, 1])
    return _named(conv, name)


def _batch_norm(x: openvino.Node, weights: Weights, name: str) -> openvino.Node:
    gamma, beta, mean, var = (weights[f"{name}.{k}"] for k in ("weight", "bias", "running_mean", "running_var"))
    return _named(ops.batch_norm_inference(x, _const(gamma), _const(beta), _const(mean), _const(var), BN_EPS), name)


def _named(node: openvino.Node, name: str) -> openvino.Node:
    """The op under its module's name in architecture.py (`layer2.0.conv1`): stable names, which the int8
    model's quantizers inherit (`layer2.0.add/fq_output_0`)."""
    node.set_friendly_name(name)
    return node


def _const(value: np.ndarray) -> openvino.Node:
    dtype = np.float32 if value.dtype.kind == "f" else value.dtype
    return ops.constant(np.array(value, dtype=dtype, order="C"))  # not ascontiguousarray: it makes a scalar 1-d
