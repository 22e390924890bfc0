"""The torch side of inference: devices and the torch backends.

Every backend maps a float32 (N, 3, S, S) array to (N, C) logits:

    openvino  OpenVINO on the CPU, from the IR (openvino_ir.py; served without torch)
    eager     the seed's way: NCHW, batch norm as a separate op
    fused     channels_last, each conv -> batch-norm pair folded into the conv
    compile   torch.compile of `fused` (minutes of compilation at start-up)
    onnx      ONNX Runtime on a graph exported at load (the `onnx` extra)

On the CPU all of them stay within 1e-5 of eager in probability at fp32
(tests/integration/test_backends.py), so the choice is by speed alone: OpenVINO, the fastest
measured (docs/performance/serving.md#offline-the-fastest-exact-backend). On CUDA the default is `fused`
under fp16 autocast, untested on a GPU (none was available to this project).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

import bentoml
import numpy as np
import safetensors.numpy
import torch
from torch import nn
from torch.fx.experimental.optimization import fuse

from .architecture import as_arrays, build_network
from .conversion import build_ir
from .devices import choose_device
from .inference import Classifier, choose
from .openvino_ir import Runtime, compile_ir
from .options import Backend, Precision
from .spec import ModelSpec
from .store import WEIGHTS_FILE, read_spec

log = logging.getLogger(__name__)


def load_network(model: bentoml.Model) -> nn.Module:
    """A stored model's network on the CPU, in eval mode."""
    return build_network(read_spec(model), safetensors.numpy.load_file(model.path_of(WEIGHTS_FILE))).eval()


def torch_classifier(
    module: nn.Module,
    spec: ModelSpec,
    *,
    tag: str,
    metadata: dict[str, Any],
    device: str | torch.device = "cpu",
    backend: str = "auto",
    precision: str = "auto",
    precision_reason: str | None = None,
) -> Classifier:
    """A network in memory as a Classifier; `openvino` converts it to an IR on the way. `precision_reason`:
    why the caller chose `precision`, when it did (load_classifier)."""
    target = choose_device(str(device))
    backend, precision, reason = choose(target.type, backend, precision)
    reason = precision_reason or reason
    if backend == "openvino":
        if precision == "int8":
            raise ValueError("int8 runs the calibrated IR of a registered model (save_model.py --calibration-images)")
        run = compile_ir(build_ir(spec, as_arrays(module)), precision)
    else:
        run = build(module, backend, target, precision, input_size=spec.input_size)
    return Classifier(
        run,
        spec,
        tag=tag,
        metadata=metadata,
        device=str(target),
        backend=backend,
        precision=precision,
        precision_reason=reason,
    )


def build(
    module: nn.Module, backend: Backend, device: torch.device, precision: Precision = "fp32", *, input_size: int = 32
) -> Runtime:
    """`module` (eval mode) prepared to run as a torch or ONNX backend on `device`."""
    module = module.to(device).eval()
    if backend == "onnx":
        return _onnx(module, input_size)
    network: Callable[[torch.Tensor], torch.Tensor] = module
    if backend in ("fused", "compile"):
        # Only a batch norm that follows a convolution folds into it (torch.fx's `fuse` copies the
        # module and folds exactly those); one before a convolution would move the zero padding.
        network = fuse(module).to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stubs omit it
    if backend == "compile":
        network = torch.compile(network, dynamic=True)
    layout = torch.contiguous_format if backend == "eager" else torch.channels_last
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)

    def run(batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(batch).to(device, non_blocking=True).contiguous(memory_format=layout)
        autocast = torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()
        try:
            with torch.inference_mode(), autocast:
                return network(x).float().cpu().numpy()
        except torch.OutOfMemoryError as e:  # Classifier splits the batch on MemoryError
            if device.type == "cuda":
                torch.cuda.empty_cache()
            raise MemoryError(str(e)) from e

    return run


def _onnx(module: nn.Module, input_size: int) -> Runtime:
    try:
        import onnxruntime as ort  # lazy: the `onnx` extra, needed only by this backend
    except ImportError:
        raise RuntimeError("backend 'onnx' needs ONNX Runtime: pip install 'pyramidnet-bento[onnx]'") from None
    sample = torch.zeros(2, 3, input_size, input_size)
    exported = torch.onnx.export(
        module,
        (sample,),
        dynamo=True,
        dynamic_shapes=({0: torch.export.Dim("batch", max=65536)},),
        input_names=["images"],
        verbose=False,
    )
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    assert exported is not None  # the dynamo exporter's program (None only for the legacy one)
    session = ort.InferenceSession(exported.model_proto.SerializeToString(), options, ["CPUExecutionProvider"])
    log.info("exported to ONNX and loaded into ONNX Runtime %s", ort.__version__)

    def run(batch: np.ndarray) -> np.ndarray:
        return session.run(None, {"images": batch})[0]

    return run
