"""The model loaded for inference: float32 (N, 3, H, W) in, probabilities (N, C) out. Imports no torch.

A Classifier wraps a runtime, a function from a normalised batch to logits: OpenVINO running the
stored IR on the CPU (openvino_ir.py), or a torch backend (backends.py) on a GPU or when asked.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, cast

import numpy as np

from .openvino_ir import Runtime, native_bf16
from .options import BACKENDS, PRECISIONS, Backend, Precision
from .spec import ModelSpec

log = logging.getLogger(__name__)


def choose(device_type: str, backend: str = "auto", precision: str = "auto") -> tuple[Backend, Precision]:
    """The measured default for a device type (`cpu`, `cuda`) unless overridden, checked.

    The CPU runs OpenVINO, the fastest backend measured, at bf16 where the CPU computes it natively
    and fp32, the exact one, elsewhere: the rule is the fastest precision within 0.1 pp of fp32's
    top-1, and the table it reads is docs/performance.md#precision. fp32, bf16 and int8 can be
    asked for. CUDA runs the `fused` torch backend under fp16 autocast (untested on a GPU).
    """
    if backend == "auto":
        backend = "openvino" if device_type == "cpu" else "fused"
    if precision == "auto" and device_type != "cpu":
        precision = "fp16"
    elif precision == "auto":
        precision = "bf16" if backend == "openvino" and native_bf16() else "fp32"
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if backend in ("onnx", "openvino") and device_type != "cpu":
        raise ValueError(f"backend {backend!r} runs on the CPU here; on {device_type} use a torch backend")
    if precision in ("bf16", "int8") and device_type == "cpu" and backend != "openvino":
        raise ValueError(f"{precision} on the CPU runs through OpenVINO; {backend} runs fp32 there")
    if precision == "bf16" and device_type == "cpu" and not native_bf16():
        raise ValueError(
            "bf16 needs a CPU that computes it natively (AVX512_BF16 or AMX); this one does not: "
            "use fp32, or auto to choose"
        )
    if precision == "int8" and backend != "openvino":
        raise ValueError("int8 runs only through OpenVINO on the CPU")
    if precision == "fp16" and device_type != "cuda":
        raise ValueError(f"fp16 runs only on CUDA with a torch backend; {device_type} with {backend} cannot")
    return cast(Backend, backend), cast(Precision, precision)  # both checked against their literals above


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
    ) -> None:
        self._run = run
        self.spec = spec
        self.tag = tag
        self.metadata = metadata
        self.device = device
        self.backend = backend
        self.precision = precision
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
        log.info(
            "warmed up %s (%s, %s) on %s for batch sizes %s", self.tag, self.backend, self.precision, self.device, sizes
        )
