"""The BentoML model store, read side: find a stored model and read its spec. Imports no torch.

A stored model's folder holds the fp32 weights (safetensors), the spec, and the OpenVINO IR that
registration converted (registry.py; the IR's layout is openvino_ir.py's).
"""

from __future__ import annotations

import json

import bentoml

from .spec import DEFAULT_MODEL_NAME, ModelSpec

WEIGHTS_FILE = "model.safetensors"
SPEC_FILE = "spec.json"


def get_model(ref: str | bentoml.Model = f"{DEFAULT_MODEL_NAME}:latest") -> bentoml.Model:
    """A stored model by tag (`name`, `name:latest` or `name:version`), or the model itself."""
    return ref if isinstance(ref, bentoml.Model) else bentoml.models.get(ref)


def read_spec(model: bentoml.Model) -> ModelSpec:
    with open(model.path_of(SPEC_FILE)) as f:
        return ModelSpec.model_validate(json.load(f))
