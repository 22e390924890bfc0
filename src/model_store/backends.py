"""How the network runs: the inference backends, and which one each device uses by default.

Every backend maps a float32 (N, 3, S, S) array to (N, C) logits:

    eager     the seed's way: NCHW, batch norm as a separate op
    fused     channels_last, each conv -> batch-norm pair folded into the conv
    compile   torch.compile of `fused` (about two minutes of compilation at start-up)
    onnx      ONNX Runtime on a graph exported at load (the `onnx` extra)
    openvino  OpenVINO on the CPU, fp32 inference precision forced

On the CPU all of them stay within 1e-5 of eager in probability (tests/test_backends.py), so the
choice is by speed alone. Measured on the 2-core CPU machine (docs/performance.md,
`python -m bench.offline`), OpenVINO is the fastest at every batch size from 1 to 128 in each
of four runs: 2.4x to 4.5x eager at batch 1, 1.3x to 1.6x at 16, 5 to 25 % ahead of `fused`,
and ready in seconds. So `auto` picks it on the CPU. On CUDA `auto` is `fused` under fp16 autocast (`precision`): tensor cores,
half the memory traffic; the GPU test holds it to >= 99.9 % top-1 agreement with fp32 on the
10,000 test images (not yet measured: no GPU was available). `PYRAMIDNET_BACKEND` and
`PYRAMIDNET_PRECISION` override both choices.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Literal, get_args

import numpy as np
import torch
from torch import nn
from torch.fx.experimental.optimization import fuse

log = logging.getLogger(__name__)

Backend = Literal["eager", "fused", "compile", "onnx", "openvino"]
Precision = Literal["fp32", "fp16", "bf16"]
BACKENDS: tuple[Backend, ...] = ("eager", "fused", "compile", "onnx", "openvino")
Runtime = Callable[[np.ndarray], torch.Tensor]
"""float32 (N, 3, S, S) -> (N, C) logits on the model's device."""


def choose(device: torch.device, backend: str = "auto", precision: str = "auto") -> tuple[Backend, Precision]:
    """The measured default for `device` unless overridden; CPU runs fp32 only (exact)."""
    if backend == "auto":
        backend = "openvino" if device.type == "cpu" else "fused"
    if precision == "auto":
        precision = "fp16" if device.type == "cuda" else "fp32"
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if precision not in get_args(Precision):
        raise ValueError(f"unknown precision {precision!r}; choose fp32, fp16 or bf16")
    if backend in ("onnx", "openvino") and device.type != "cpu":
        raise ValueError(f"backend {backend!r} runs on the CPU here; on {device} use a torch backend")
    if precision != "fp32" and device.type != "cuda":
        raise ValueError(f"{precision} runs only on CUDA with a torch backend; {device} with {backend} runs fp32")
    return backend, precision  # type: ignore[return-value]


def build(
    module: nn.Module, backend: Backend, device: torch.device, precision: Precision = "fp32", *, input_size: int = 32
) -> Runtime:
    """`module` (eval mode) prepared to run as `backend` on `device`."""
    module = module.to(device).eval()
    if backend == "onnx":
        return _onnx(module, input_size)
    if backend == "openvino":
        return _openvino(module, input_size)
    if backend in ("fused", "compile"):
        # Only a batch norm that follows a convolution folds into it (torch.fx's `fuse` copies the
        # module and folds exactly those); one before a convolution would move the zero padding.
        module = fuse(module).to(memory_format=torch.channels_last)
    if backend == "compile":
        module = torch.compile(module, dynamic=True)
    layout = torch.contiguous_format if backend == "eager" else torch.channels_last
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)

    def run(batch: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(batch).to(device, non_blocking=True).contiguous(memory_format=layout)
        autocast = torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()
        with torch.inference_mode(), autocast:
            return module(x)

    return run


def _onnx(module: nn.Module, input_size: int) -> Runtime:
    try:
        import onnxruntime as ort
    except ImportError:
        raise RuntimeError("backend 'onnx' needs ONNX Runtime: pip install 'pyramidnet-bento[onnx]'") from None
    sample = torch.zeros(2, 3, input_size, input_size)
    exported = torch.onnx.export(
        module, (sample,), dynamo=True, dynamic_shapes=({0: torch.export.Dim("batch", max=65536)},),
        input_names=["images"], verbose=False,
    )  # fmt: skip
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(exported.model_proto.SerializeToString(), options, ["CPUExecutionProvider"])
    log.info("exported to ONNX and loaded into ONNX Runtime %s", ort.__version__)

    def run(batch: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {"images": batch})[0])

    return run


def _openvino(module: nn.Module, input_size: int) -> Runtime:
    import openvino

    sample = torch.zeros(2, 3, input_size, input_size)
    program = torch.export.export(module, (sample,), dynamic_shapes=({0: torch.export.Dim("batch", max=65536)},))
    graph = openvino.convert_model(program)
    graph.reshape({0: [-1, 3, input_size, input_size]})  # only the batch varies
    config = {
        "INFERENCE_PRECISION_HINT": "f32",  # never bf16, even on a CPU that has it: exact is the contract
        "INFERENCE_NUM_THREADS": torch.get_num_threads(),
        "PERFORMANCE_HINT": "LATENCY",  # one stream over every thread: the batcher sends one batch at a time
    }
    compiled = openvino.Core().compile_model(graph, "CPU", config)
    log.info("compiled for OpenVINO %s on the CPU", openvino.__version__)

    def run(batch: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(compiled.infer_new_request({0: batch})[0].copy())  # thread-safe: a request per call

    return run
