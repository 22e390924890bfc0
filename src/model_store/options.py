"""The runtime choices a deployment names: how the network runs, and at which precision."""

from __future__ import annotations

from typing import Literal, get_args

Backend = Literal["openvino", "eager", "fused", "compile", "onnx"]
# int8+recheck: int8, with the exact precision re-checking the near ties (cascade.py).
Precision = Literal["fp32", "bf16", "int8", "int8+recheck", "fp16"]
BACKENDS: tuple[Backend, ...] = get_args(Backend)
PRECISIONS: tuple[Precision, ...] = get_args(Precision)
CASCADE: Precision = "int8+recheck"
