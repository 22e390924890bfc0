"""The model loaded for inference: float32 (N, 3, H, W) in, probabilities (N, C) out. Imports no torch.

A Classifier wraps a runtime, a function from a normalised batch to logits: OpenVINO running the
stored IR on the CPU (openvino_ir.py), or a torch backend (backends.py) on a GPU or when asked.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, NamedTuple

import numpy as np

from .cascade import Cascade
from .openvino_ir import Int8Accuracy, Runtime, native_bf16
from .options import BACKENDS, PRECISIONS, Backend, Precision
from .spec import ModelSpec

log = logging.getLogger(__name__)


MAX_INT8_DROP_PP = 0.1
"""How much top-1 an int8 model may lose against fp32, in points, to be served by default: the upper
bound of what its maker measured must be within it (Int8Accuracy.drop_pp_upper)."""


class Choice(NamedTuple):
    backend: Backend
    precision: Precision
    reason: str
    """Why this precision: for the log and /model_info."""


def choose(
    device_type: str, backend: str = "auto", precision: str = "auto", int8: Int8Accuracy | None = None
) -> Choice:
    """The measured default for a device type (`cpu`, `cuda`) unless overridden, checked.

    The CPU runs OpenVINO, the fastest backend measured, at the fastest precision within
    MAX_INT8_DROP_PP of fp32's top-1 (docs/performance.md#precision): int8 where the model has an
    int8 IR measured within it (`int8`, what its maker recorded), else bf16 where the CPU computes it
    natively, else fp32, the exact one. fp32, bf16 and int8 can be asked for. CUDA runs the `fused`
    torch backend under fp16 autocast (untested on a GPU).
    """
    reason = "asked for"
    if backend == "auto":
        backend = "openvino" if device_type == "cpu" else "fused"
    if precision == "auto" and device_type != "cpu":
        precision, reason = "fp16", "the default on CUDA: fp16 autocast (untested on a GPU)"
    elif precision == "auto":
        precision, reason = _cpu_default(backend, int8)
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if backend in ("onnx", "openvino") and device_type != "cpu":
        raise ValueError(f"backend {backend!r} runs on the CPU here; on {device_type} use a torch backend")
    if precision in ("bf16", "int8", "int8+recheck") and device_type == "cpu" and backend != "openvino":
        raise ValueError(f"{precision} on the CPU runs through OpenVINO; {backend} runs fp32 there")
    if precision == "bf16" and device_type == "cpu" and not native_bf16():
        raise ValueError(
            "bf16 needs a CPU that computes it natively (AVX512_BF16 or AMX); this one does not: "
            "use fp32, or auto to choose"
        )
    if precision in ("int8", "int8+recheck") and backend != "openvino":
        raise ValueError(f"{precision} runs only through OpenVINO on the CPU")
    if precision == "fp16" and device_type != "cuda":
        raise ValueError(f"fp16 runs only on CUDA with a torch backend; {device_type} with {backend} cannot")
    return Choice(backend, precision, reason)  # both checked above


def _cpu_default(backend: str, int8: Int8Accuracy | None) -> tuple[str, str]:
    """The CPU's precision and why: the first of int8, bf16 and fp32 this model and CPU allow."""
    if backend != "openvino":
        return "fp32", f"{backend} runs fp32 on the CPU"
    if int8 is not None and int8.drop_pp_upper <= MAX_INT8_DROP_PP:
        return "int8", (
            f"its int8 model is within {MAX_INT8_DROP_PP} pp of fp32 ({int8}), and int8 is the fastest precision "
            "measured on every CPU (docs/performance.md#precision)"
        )
    missing = (
        f"it has no int8 model measured within {MAX_INT8_DROP_PP} pp of fp32"
        if int8 is None
        else f"its int8 model is not shown within {MAX_INT8_DROP_PP} pp of fp32 ({int8})"
    )
    if native_bf16():
        return "bf16", f"this CPU computes bf16 natively, and {missing}"
    return "fp32", f"this CPU has no native bf16, and {missing}"


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float32, stable for any logits."""
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


class Classifier:
    """A runtime with the spec and store metadata it came with.

    It keeps count of forward passes that failed in a row: `healthy` turns False after
    `FAILURES_BEFORE_UNHEALTHY` of them and True again after the next success.
    """

    FAILURES_BEFORE_UNHEALTHY = 3

    def __init__(
        self,
        run: Runtime,
        spec: ModelSpec,
        *,
        tag: str,
        metadata: dict[str, Any],
        device: str,
        backend: Backend,
        precision: Precision,
        precision_reason: str = "asked for",
    ) -> None:
        self._run = run
        self.spec = spec
        self.tag = tag
        self.metadata = metadata
        self.device = device
        self.backend = backend
        self.precision = precision
        self.precision_reason = precision_reason
        self.consecutive_failures = 0

    @property
    def healthy(self) -> bool:
        return self.consecutive_failures < self.FAILURES_BEFORE_UNHEALTHY

    def predict_proba(self, batch: np.ndarray) -> np.ndarray:
        """float32 (N, 3, S, S) normalised input -> float32 (N, num_classes) softmax probabilities."""
        size = self.spec.input_size
        if batch.ndim != 4 or batch.shape[1:] != (3, size, size):
            raise ValueError(f"expected a (N, 3, {size}, {size}) batch, got {batch.shape}")
        try:
            probabilities = self._forward(np.ascontiguousarray(batch, dtype=np.float32))
        except Exception:
            self.consecutive_failures += 1
            raise
        self.consecutive_failures = 0
        return probabilities

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        """One forward pass; out of memory, the two halves separately (down to one image)."""
        try:
            return softmax(np.asarray(self._run(batch), dtype=np.float32))
        except MemoryError:
            if len(batch) == 1:
                raise
            half = len(batch) // 2
            log.warning(
                "out of memory on a batch of %d on %s; retrying as %d + %d",
                len(batch),
                self.device,
                half,
                len(batch) - half,
            )
            return np.concatenate([self._forward(batch[:half]), self._forward(batch[half:])])

    def warm_up(self, batch_sizes: Iterable[int]) -> None:
        """Run each batch size once so the first real request does not pay for lazy initialisation."""
        sizes = list(batch_sizes)
        for n in sizes:
            self.predict_proba(np.zeros((n, 3, self.spec.input_size, self.spec.input_size), dtype=np.float32))
        if isinstance(self._run, Cascade):
            self._run.warm_up(sizes)
        log.info(
            "warmed up %s (%s, %s) on %s for batch sizes %s", self.tag, self.backend, self.precision, self.device, sizes
        )
