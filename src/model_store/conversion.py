"""The network converted for the CPU runtime: torch -> OpenVINO's fp32 IR, and that IR -> int8 (NNCF).

Registration stores what these make (registry.py); a torch backend asked to run through OpenVINO
converts on the way (backends.py). Serving reads the result with openvino_ir.py, without torch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openvino
import torch

from .openvino_ir import IR_DIR, IR_FILES


def export_ir(module: torch.nn.Module, folder: Path, input_size: int = 32) -> Path:
    """Convert the network to OpenVINO's fp32 IR under `folder`/openvino; returns the .xml path."""
    sample = torch.zeros(2, 3, input_size, input_size)
    batch = torch.export.Dim("batch", max=65536)
    program = torch.export.export(module.cpu().eval(), (sample,), dynamic_shapes=({0: batch},))
    graph = openvino.convert_model(program)
    graph.reshape({0: [-1, 3, input_size, input_size]})  # only the batch varies
    xml = Path(folder) / IR_DIR / IR_FILES["fp32"]
    openvino.save_model(graph, xml, compress_to_fp16=False)  # fp32 weights: exact is the contract
    return xml


def quantize_ir(xml: Path, calibration: np.ndarray, calibrated_on: str = "", out: Path | None = None) -> Path:
    """int8 post-training quantization of an fp32 IR (NNCF) calibrated on normalised images, saved
    beside it (or at `out`); returns the int8 .xml."""
    try:
        import nncf  # lazy: the `int8` extra, needed only when calibration images are given
    except ImportError:
        raise RuntimeError("int8 needs NNCF at registration: pip install 'pyramidnet-bento[int8]'") from None
    graph = openvino.Core().read_model(xml)
    samples = nncf.Dataset([image[None] for image in calibration.astype(np.float32)])
    quantized = nncf.quantize(graph, samples, subset_size=len(calibration))
    quantized.set_rt_info(f"{len(calibration)} images: {calibrated_on}", ["pyramidnet", "calibrated_on"])
    out = out or xml.with_name(IR_FILES["int8"])
    openvino.save_model(quantized, out, compress_to_fp16=False)
    return out
