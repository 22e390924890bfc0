"""The runtime choices a deployment names: how the network runs, and at which precision."""

from __future__ import annotations

from typing import Literal, get_args

Backend = Literal["openvino", "eager", "fused", "compile", "onnx"]
Precision = Literal["fp32", "bf16", "int8", "fp16"]
BACKENDS: tuple[Backend, ...] = get_args(Backend)
PRECISIONS: tuple[Precision, ...] = get_args(Precision)
