"""The BentoML model store, write side: register a checkpoint pickle-free, with the OpenVINO IR
the CPU serves (fp32, and int8 when calibration images are given). Imports no torch: the embedded
default registers on an install without it, and a .pth reaches here already read (pth.py). Reading
is store.py, loading for inference loading.py."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bentoml
import numpy as np
import openvino
import safetensors
import safetensors.numpy
from PIL import Image

from .checkpoint import Checkpoint, parameter_count, stored_weights
from .conversion import build_ir, quantize_ir, save_ir, store_ir
from .imaging import preprocess
from .openvino_ir import IR_FILES, ir_path
from .spec import DEFAULT_MODEL_NAME, ModelSpec
from .store import SPEC_FILE, WEIGHTS_FILE

log = logging.getLogger(__name__)

VERSION_LENGTH = 16  # hex digits of the checkpoint's sha256 that make its version
# The trained weights shipped with the package, and their int8 model (scripts/ship_weights.py writes both).
SHIPPED_WEIGHTS = Path(__file__).parent / "weights" / "pyramidnet110-cifar10.safetensors"
SHIPPED_INT8 = SHIPPED_WEIGHTS.with_name("pyramidnet110-cifar10-int8.xml")


class RegistrationError(ValueError):
    """The checkpoint fits the architecture but does not behave like a usable model."""


def embedded_default(shipped: Path = SHIPPED_WEIGHTS) -> Checkpoint:
    """The default model: the PyramidNet-110 this project trained, shipped in the package."""
    if not shipped.is_file():
        raise RegistrationError(
            f"the embedded default's weights are missing ({shipped}): reinstall the package, "
            "or register a checkpoint of your own with --checkpoint"
        )
    return _shipped(shipped)


def ship_weights(checkpoint: Checkpoint, path: Path = SHIPPED_WEIGHTS, **facts: str) -> Path:
    """Write a checkpoint as the package's shipped default: fp32 safetensors, its facts as metadata."""
    header = {k: str(v) for k, v in facts.items()}
    if checkpoint.epoch is not None:
        header["epoch"] = str(checkpoint.epoch)
    if checkpoint.best_val_acc is not None:
        header["best_val_acc"] = str(checkpoint.best_val_acc)
    header["source_sha256"] = checkpoint.sha256
    path.parent.mkdir(parents=True, exist_ok=True)
    safetensors.numpy.save_file(stored_weights(ModelSpec(), checkpoint.state_dict), path, metadata=header)
    return path


def int8_belongs_to(xml: Path, checkpoint: Checkpoint) -> bool:
    """Whether an int8 IR was made from this checkpoint's weights (the sha256 its maker recorded)."""
    graph = openvino.Core().read_model(xml)
    made_from = ["pyramidnet", "weights_sha256"]
    return graph.has_rt_info(made_from) and graph.get_rt_info(made_from).astype(str) == checkpoint.sha256


def _shipped(path: Path) -> Checkpoint:
    with safetensors.safe_open(path, framework="numpy") as f:
        facts: dict[str, Any] = dict(f.metadata() or {})
        state_dict = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    epoch, accuracy = facts.pop("epoch", None), facts.pop("best_val_acc", None)
    facts.pop("source_sha256", None)
    if "measured_top1" in facts:  # what scripts/ship_weights.py measured: numbers, not strings
        facts["measured_top1"], facts["measured_images"] = float(facts["measured_top1"]), int(facts["measured_images"])
    int8 = path.with_name(f"{path.stem}-int8.xml")
    return Checkpoint(
        state_dict=state_dict,
        sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
        source=f"embedded:{path.name}",
        epoch=int(epoch) if epoch is not None else None,
        best_val_acc=float(accuracy) if accuracy is not None else None,
        metadata=facts,
        int8_ir=int8 if int8.is_file() else None,
    )


def register(
    checkpoint: Checkpoint,
    *,
    name: str = DEFAULT_MODEL_NAME,
    spec: ModelSpec | None = None,
    labels: dict[str, str] | None = None,
    measured: dict[str, Any] | None = None,
    calibration: np.ndarray | None = None,
    calibrated_on: str = "",
) -> bentoml.Model:
    """Validate, smoke-test and store a checkpoint with its OpenVINO IR; nothing is written unless
    every step succeeds.

    The version comes from the checkpoint's sha256: registering the same file again returns the
    model already stored, and a tag names exactly one set of weights. The int8 IR comes with the
    checkpoint (the embedded default's, made from its weights when they shipped) or from
    `calibration` (normalised float32 training images, never test images); either is added to a
    stored model that lacks one."""
    if checkpoint.int8_ir is not None and not int8_belongs_to(checkpoint.int8_ir, checkpoint):
        raise RegistrationError(f"{checkpoint.int8_ir} was not made from {checkpoint.source}: ship both again")
    tag = bentoml.Tag(name, checkpoint.sha256[:VERSION_LENGTH])
    with contextlib.suppress(bentoml.exceptions.NotFound):
        existing = bentoml.models.get(tag)
        if measured and any(existing.info.metadata.get(k) != v for k, v in measured.items()):
            raise RegistrationError(
                f"{tag} holds these weights already, registered without this measurement; to record it, "
                f"delete the stored model first (bentoml models delete {tag}) and register again"
            )
        log.info("%s is already in the store (the same weights); not registered again", tag)
        if not ir_path(existing.path, "int8").is_file():
            if (int8_ir := checkpoint.int8_ir) is not None:
                _add_int8(existing, lambda out: _copy_ir(int8_ir, out))
            elif calibration is not None:
                _add_int8(
                    existing, lambda out: quantize_ir(ir_path(existing.path, "fp32"), calibration, calibrated_on, out)
                )
        return existing
    spec = spec or ModelSpec()
    weights = stored_weights(spec, checkpoint.state_dict)  # CheckpointError if they do not fit
    graph = build_ir(spec, weights)
    _smoke_test(graph, spec)

    metadata: dict[str, Any] = {
        **checkpoint.metadata,
        **(measured or {}),
        "source": checkpoint.source,
        "source_sha256": checkpoint.sha256,
        "parameters": parameter_count(weights),
        "openvino_version": openvino.__version__,
        "bentoml_version": str(bentoml.__version__),
        "registered_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if checkpoint.epoch is not None:
        metadata["epoch"] = checkpoint.epoch
    if checkpoint.best_val_acc is not None:
        metadata["best_val_acc"] = checkpoint.best_val_acc

    with bentoml.models.create(tag, labels=labels or {}, metadata=metadata) as model:
        # "format": "pt" as before the store was written without torch: the same bytes, and any
        # safetensors reader loads it as torch tensors.
        safetensors.numpy.save_file(weights, model.path_of(WEIGHTS_FILE), metadata={"format": "pt"})
        with open(model.path_of(SPEC_FILE), "w") as f:
            f.write(spec.model_dump_json(indent=2))
        xml = save_ir(graph, Path(model.path))
        if checkpoint.int8_ir is not None:
            _copy_ir(checkpoint.int8_ir, ir_path(model.path, "int8"))
        elif calibration is not None:
            quantize_ir(xml, calibration, calibrated_on)
    log.info("registered %s from %s", model.tag, checkpoint.source)
    return model


def _add_int8(model: bentoml.Model, make: Callable[[Path], object]) -> None:
    """Make a stored model's int8 IR in a scratch folder beside its fp32 IR (`make(xml)` writes it), then
    move it in (.bin first: the .xml marks it whole)."""
    fp32 = ir_path(model.path, "fp32")
    if not fp32.is_file():
        store_ir(model)
    with tempfile.TemporaryDirectory(dir=fp32.parent) as scratch:
        xml = Path(scratch) / IR_FILES["int8"]
        make(xml)
        target = ir_path(model.path, "int8")
        os.replace(xml.with_suffix(".bin"), target.with_suffix(".bin"))
        os.replace(xml, target)
    log.info("added the int8 model to %s", model.tag)


def _copy_ir(xml: Path, out: Path) -> None:
    shutil.copyfile(xml.with_suffix(".bin"), out.with_suffix(".bin"))
    shutil.copyfile(xml, out)


def _smoke_test(graph: openvino.Model, spec: ModelSpec) -> None:
    """One forward pass on an image through the real preprocessing, as the CPU serves it (OpenVINO,
    fp32): finite logits or refuse."""
    side = spec.input_size
    ramp = np.linspace(0, 255, side, dtype=np.float32)
    pixels = np.stack([np.add.outer(ramp, ramp) / 2, np.add.outer(ramp, ramp[::-1]) / 2, np.tile(ramp, (side, 1))], -1)
    sample = preprocess(Image.fromarray(pixels.astype(np.uint8), "RGB"), spec)
    compiled = openvino.Core().compile_model(graph, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    logits = compiled(sample[None])[0]
    if logits.shape != (1, spec.num_classes) or not np.isfinite(logits).all():
        fault = "non-finite" if logits.shape == (1, spec.num_classes) else "wrong-shaped"
        raise RegistrationError(
            f"forward pass on a sample image gave {fault} output {tuple(logits.shape)}; refusing to register"
        )
