"""The torch device the torch backends and training run on, chosen by one function, and what follows from
it for training: its precision, autocast, memory layout, and the name a run records.

Training's CUDA path is the CPU's with the device swapped: the data and its augmentation are tensors on the
device, the random draws come from the run's CPU generator on every device (so a run can move between
devices), the network is channels-last under bf16 autocast. It is untested on a GPU: none has been lent to
this project yet (docs/training.md#on-a-gpu).
"""

from __future__ import annotations

import os
import platform
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from functools import partial
from pathlib import Path
from typing import Any

import torch

Autocast = Callable[[], AbstractContextManager[Any]]  # bf16 autocast, or nothing


def choose_device(asked: str = "auto") -> torch.device:
    """`auto`: CUDA where torch sees a GPU, else the CPU; `cpu`, `cuda` or `cuda:N` as asked. RuntimeError, in one
    line, where CUDA is asked for and absent."""
    if asked == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(asked)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {asked!r}: torch {torch.__version__} sees no CUDA GPU here")
    return device


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bf16 natively: a CUDA GPU that supports it (Ampere and later), or a CPU with
    AVX512_BF16 or AMX."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    from .openvino_ir import native_bf16 as cpu_native_bf16  # lazy: the CPU's answer; a GPU machine has no OpenVINO

    return cpu_native_bf16()


def choose_precision(asked: str, device: torch.device, resumed: str | None = None) -> str:
    """`--precision`: bf16 or fp32 as asked. auto: a resumed run's own (a run is one recipe), else bf16 where
    the device computes it natively, else fp32."""
    if asked != "auto":
        return asked
    return resumed or ("bf16" if native_bf16(device) else "fp32")


def autocast(precision: str, device: torch.device) -> Autocast:
    """The context the forward pass runs in: bf16 autocast, or nothing (fp32)."""
    if precision == "bf16":
        return partial(torch.autocast, device.type, dtype=torch.bfloat16)
    return nullcontext


def memory_format(device: torch.device) -> torch.memory_format:
    """The layout training's network and batches take, cuDNN left to choose its kernels on CUDA: channels-last
    there (its tensor cores' layout); on the CPU the layout measured fastest under bf16 autocast
    (bench.train_step: channels-last is 0.67x there on Zen 5, 1.16x under fp32)."""
    torch.backends.cudnn.benchmark = device.type == "cuda"
    return torch.channels_last if device.type == "cuda" else torch.contiguous_format


def hardware(device: torch.device) -> str:
    """What the run trained on, for its summary: the GPU's name, or the CPU's and its cores."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} cores"
