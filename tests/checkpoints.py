"""Checkpoints as a user holds them: the shipped weights saved as PyTorch's .pth."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from model_store.registry import embedded_default


def shipped_as_pth(path: Path, **facts: Any) -> Path:
    """The embedded default's weights at `path` in the seed's format: {"model_state_dict": ..., **facts}."""
    import torch  # lazy: only the tests that make a .pth need it

    state_dict = {k: torch.from_numpy(v) for k, v in embedded_default().state_dict.items()}
    torch.save({"model_state_dict": state_dict, **facts}, path)
    return path
