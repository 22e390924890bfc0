"""A stored model loaded for inference on the device, backend and precision chosen.

The CPU path compiles the stored OpenVINO IR and never imports torch; a model registered before
the IR was stored gets it built from its weights on first load, and kept (conversion.py). Torch is
imported only where it is needed, lazily and on purpose: to ask for a GPU where one could be, and
for a GPU or a torch backend named by the deployment (backends.py). That is what lets the CPU
bento leave torch out.
"""

from __future__ import annotations

import glob
import logging
import os

import bentoml

from .conversion import store_ir
from .extras import has_torch, needs_torch
from .inference import Classifier, choose
from .openvino_ir import compile_ir, int8_accuracy, ir_path
from .store import get_model, read_spec

log = logging.getLogger(__name__)


def device_type(device: str = "auto") -> str:
    """`cpu` or `cuda` for a device name; `auto` is CUDA when torch is installed and sees a GPU.

    Torch is asked only where a GPU could be: an NVIDIA device node exists (/dev/dxg on WSL2) and
    torch is installed (`make serve` leaves it out where nvidia-smi finds no GPU, and the CPU bento
    has none); importing it costs a CPU node seconds of start-up.
    """
    if device != "auto":
        return device.split(":")[0]
    if not (glob.glob("/dev/nvidia[0-9]*") or os.path.exists("/dev/dxg")):
        return "cpu"
    if not has_torch():
        log.warning("%s; serving on the CPU meanwhile", needs_torch("this machine's NVIDIA GPU"))
        return "cpu"
    import torch  # lazy: only where a GPU could be

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_classifier(
    ref: str | bentoml.Model, device: str = "auto", backend: str = "auto", precision: str = "auto"
) -> Classifier:
    """A stored model as a Classifier on `device` (`auto`, `cpu`, `cuda`, `cuda:1`...); see inference.choose."""
    model = get_model(ref)
    spec = read_spec(model)
    kind = device_type(device)
    measured = int8_accuracy(model.path) if precision == "auto" else None  # read only where the rule needs it
    backend, precision, reason = choose(kind, backend, precision, measured)
    log.info("%s runs %s on %s: %s", model.tag, precision, kind, reason)
    metadata = dict(model.info.metadata)
    if backend != "openvino":
        if not has_torch():
            raise RuntimeError(needs_torch(f"the {backend} backend on {kind}"))
        # lazy: the torch side, only for a GPU or a torch backend asked for by name
        from .backends import load_network, torch_classifier

        return torch_classifier(
            load_network(model),
            spec,
            tag=str(model.tag),
            metadata=metadata,
            device=kind if device == "auto" else device,
            backend=backend,
            precision=precision,
            precision_reason=reason,
        )
    xml = ir_path(model.path, precision)
    if not xml.is_file():
        if precision == "int8":
            raise FileNotFoundError(
                f"{model.tag} has no int8 model: register it with save_model.py --calibration-images DIR"
            )
        log.warning(
            "%s was registered without an OpenVINO IR: building it from the weights and storing it beside them (once)",
            model.tag,
        )
        store_ir(model)
    return Classifier(
        compile_ir(xml, precision),
        spec,
        tag=str(model.tag),
        metadata=metadata,
        device="cpu",
        backend="openvino",
        precision=precision,
        precision_reason=reason,
    )
