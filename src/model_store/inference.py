"""The model loaded for inference on one device: float32 (N, 3, H, W) in, probabilities (N, C) out."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch import nn

from . import backends
from .spec import ModelSpec

log = logging.getLogger(__name__)


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` picks CUDA when a GPU is visible, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but CUDA is not available")
    return device


class Classifier:
    """An eval-mode network with the spec and store metadata it came with.

    It keeps count of forward passes that failed in a row: `healthy` turns False after
    `FAILURES_BEFORE_UNHEALTHY` of them and True again after the next success.
    """

    FAILURES_BEFORE_UNHEALTHY = 3

    def __init__(
        self,
        module: nn.Module,
        spec: ModelSpec,
        *,
        tag: str,
        metadata: dict[str, Any],
        device: torch.device,
        backend: str = "auto",
        precision: str = "auto",
    ) -> None:
        self.module = module.to(device).eval()
        self.spec = spec
        self.tag = tag
        self.metadata = metadata
        self.device = device
        self.backend, self.precision = backends.choose(device, backend, precision)
        self._run = backends.build(self.module, self.backend, device, self.precision, input_size=spec.input_size)
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
        """One forward pass; on out-of-memory, the two halves separately (down to one image)."""
        try:
            logits = self._run(batch)
            with torch.inference_mode():
                return torch.softmax(logits.float(), dim=1).cpu().numpy()
        except torch.OutOfMemoryError:
            if len(batch) == 1:
                raise
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            half = len(batch) // 2
            log.warning("out of memory on a batch of %d on %s; retrying as %d + %d",
                        len(batch), self.device, half, len(batch) - half)  # fmt: skip
            return np.concatenate([self._forward(batch[:half]), self._forward(batch[half:])])

    def warm_up(self, batch_sizes: Iterable[int]) -> None:
        """Run each batch size once so the first real request does not pay for lazy initialisation."""
        size = self.spec.input_size
        for n in batch_sizes:
            self.predict_proba(np.zeros((n, 3, size, size), dtype=np.float32))
        log.info("warmed up %s (%s, %s) on %s with %d threads for batch sizes %s",
                 self.tag, self.backend, self.precision, self.device, torch.get_num_threads(), list(batch_sizes))  # fmt: skip
