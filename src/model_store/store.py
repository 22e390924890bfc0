"""The BentoML model store, read side: find a stored model, read its spec, load it for inference.

A stored model's folder holds the fp32 weights (safetensors), the spec, and the OpenVINO IR that
registration converted (openvino_ir.py). The CPU path reads only the spec and the IR, so serving
on the CPU never imports torch. Torch is imported where it is needed: a GPU, a torch backend, or
a model registered before the IR was stored, which is converted once on first load and kept.
"""

from __future__ import annotations

import glob
import importlib.util
import json
import logging
import os

import bentoml

from .inference import Classifier, choose
from .openvino_ir import compile_ir, ir_path
from .spec import ModelSpec

log = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "pyramidnet-cifar10"
WEIGHTS_FILE = "model.safetensors"
SPEC_FILE = "spec.json"


def get_model(ref: str | bentoml.Model = f"{DEFAULT_MODEL_NAME}:latest") -> bentoml.Model:
    """A stored model by tag (`name`, `name:latest` or `name:version`), or the model itself."""
    return ref if isinstance(ref, bentoml.Model) else bentoml.models.get(ref)


def read_spec(model: bentoml.Model) -> ModelSpec:
    with open(model.path_of(SPEC_FILE)) as f:
        return ModelSpec.model_validate(json.load(f))


def device_type(device: str = "auto") -> str:
    """`cpu` or `cuda` for a device name; `auto` is CUDA when torch is installed and sees a GPU.

    Torch is asked only where a GPU could be: it is installed (the CPU bento has none) and an
    NVIDIA device node exists (/dev/dxg on WSL2). Importing it costs a CPU node 2 s of start-up.
    """
    if device != "auto":
        return device.split(":")[0]
    if importlib.util.find_spec("torch") is None or not (glob.glob("/dev/nvidia[0-9]*") or os.path.exists("/dev/dxg")):
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_classifier(
    ref: str | bentoml.Model, device: str = "auto", backend: str = "auto", precision: str = "auto"
) -> Classifier:
    """A stored model as a Classifier on `device` (`auto`, `cpu`, `cuda`, `cuda:1`...); see inference.choose."""
    model = get_model(ref)
    spec = read_spec(model)
    kind = device_type(device)
    backend, precision = choose(kind, backend, precision)
    metadata = dict(model.info.metadata)
    if backend != "openvino":
        from .registry import load_network
        from .backends import torch_classifier

        return torch_classifier(load_network(model), spec, tag=str(model.tag), metadata=metadata,
                                device=kind if device == "auto" else device, backend=backend, precision=precision)  # fmt: skip
    xml = ir_path(model.path, precision)
    if not xml.is_file():
        if precision == "int8":
            raise FileNotFoundError(
                f"{model.tag} has no int8 model: register it with save_model.py --calibration-images DIR"
            )
        if importlib.util.find_spec("torch") is None:
            raise RuntimeError(f"{model.tag} has no OpenVINO IR and there is no torch here to convert it: register "
                               "it again with this version (scripts/save_model.py), then rebuild the bento")  # fmt: skip
        from .registry import store_ir

        log.warning("%s was registered without an OpenVINO IR: converting it now and storing it "
                    "beside the weights (once; needs torch)", model.tag)  # fmt: skip
        store_ir(model)
    return Classifier(compile_ir(xml, precision), spec, tag=str(model.tag), metadata=metadata, device="cpu",
                      backend="openvino", precision=precision)  # fmt: skip
