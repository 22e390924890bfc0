"""What a checkpoint is once read: its weights as arrays, where it came from, and whether it fits the
architecture. Imports no torch: the embedded default is registered from here without it (pth.py
reads PyTorch's files, with torch)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .spec import BN_BUFFERS, ModelSpec

Weights = Mapping[str, np.ndarray]
"""A state dict as arrays, under architecture.py's parameter and buffer names."""

# Prefixes that wrappers add to every key: DataParallel/DistributedDataParallel, torch.compile.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")
_MAX_LISTED = 6


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message says why in one screen."""


@dataclass(frozen=True)
class Checkpoint:
    state_dict: dict[str, np.ndarray]
    sha256: str
    source: str
    epoch: int | None = None
    best_val_acc: float | None = None
    # Facts to record with the model in the store (e.g. trained, test accuracy, training command).
    metadata: dict[str, Any] = field(default_factory=dict)
    # An int8 OpenVINO IR made from these weights and measured against them (the embedded default's).
    int8_ir: Path | None = None


def strip_wrapper_prefixes(state_dict: dict[str, Any]) -> dict[str, Any]:
    """Drop a `module.` (DataParallel) or `_orig_mod.` (torch.compile) prefix shared by every key."""
    for prefix in _WRAPPER_PREFIXES:
        if state_dict and all(k.startswith(prefix) for k in state_dict):
            state_dict = {k.removeprefix(prefix): v for k, v in state_dict.items()}
    return state_dict


def check_compatible(spec: ModelSpec, state_dict: Weights) -> None:
    """Raise CheckpointError listing missing, unexpected and shape-mismatched keys, if any."""
    expected = spec.state_shapes()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        f"{k} {tuple(np.shape(state_dict[k]))} != {shape}"
        for k, shape in expected.items()
        if k in state_dict and tuple(np.shape(state_dict[k])) != shape
    ]
    problems = [
        f"{label} ({len(keys)}): {listing(keys)}"
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched))
        if keys
    ]
    if problems:
        raise CheckpointError("state_dict does not fit the architecture; " + "; ".join(problems))


def stored_weights(spec: ModelSpec, state_dict: Weights) -> dict[str, np.ndarray]:
    """A fitting state dict as the store keeps it, whatever precision it was saved in: float32 weights and
    statistics, int64 step counts (what a torch network's state dict holds after loading it)."""
    check_compatible(spec, state_dict)
    return {  # np.array, not np.ascontiguousarray: that one makes a step count's 0-d array 1-d
        k: np.array(state_dict[k], dtype=np.int64 if k.endswith("num_batches_tracked") else np.float32, order="C")
        for k in spec.state_shapes()
    }


def parameter_count(state_dict: Weights) -> int:
    """The trainable parameters: everything but the batch norms' running statistics and step counts."""
    return sum(int(np.size(v)) for k, v in state_dict.items() if not k.endswith(BN_BUFFERS))


def listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:_MAX_LISTED])
    return shown + (f", ... and {len(keys) - _MAX_LISTED} more" if len(keys) > _MAX_LISTED else "")
