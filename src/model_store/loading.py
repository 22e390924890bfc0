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

from .cascade import MIN_GAIN, Cascade, probe
from .conversion import store_ir
from .extras import has_torch, needs_torch
from .inference import MAX_INT8_DROP_PP, Classifier, choose
from .openvino_ir import Int8Accuracy, Recheck, Runtime, compile_ir, ir_path, native_bf16
from .options import CASCADE, Precision
from .spec import ModelSpec
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
    auto = precision == "auto"
    measured = Int8Accuracy.stored(model.path) if auto else None  # read only where the rule needs it
    backend, precision, reason = choose(kind, backend, precision, measured)
    if backend == "openvino":
        return _on_the_cpu(model, spec, precision, reason, auto=auto)
    log.info("%s runs %s on %s: %s", model.tag, precision, kind, reason)
    if not has_torch():
        raise RuntimeError(needs_torch(f"the {backend} backend on {kind}"))
    # lazy: the torch side, only for a GPU or a torch backend asked for by name
    from .backends import load_network, torch_classifier

    return torch_classifier(
        load_network(model),
        spec,
        tag=str(model.tag),
        metadata=dict(model.info.metadata),
        device=kind if device == "auto" else device,
        backend=backend,
        precision=precision,
        precision_reason=reason,
    )


def _on_the_cpu(model: bentoml.Model, spec: ModelSpec, precision: Precision, reason: str, *, auto: bool) -> Classifier:
    """OpenVINO on the stored IR. Chosen by the rule (`auto`), the exact precision becomes the int8
    cascade where the int8 IR records a re-check margin judged within the bound and this CPU runs the
    cascade faster (cascade.probe)."""
    shape = (3, spec.input_size, spec.input_size)
    recheck = Recheck.stored(model.path) if auto or precision == CASCADE else None
    run: Runtime
    if precision == CASCADE:
        if recheck is None:
            raise FileNotFoundError(
                f"{model.tag} has no int8 model with a re-check margin: ship_weights.py measures one"
            )
        exact: Precision = "bf16" if native_bf16() else "fp32"
        run = Cascade(_compile(model, "int8"), _compile(model, exact), recheck.margin, shape)
        reason = f"asked for: int8 re-checked in {exact} ({recheck})"
    else:
        run = _compile(model, precision)
        if auto and recheck is not None and precision in ("bf16", "fp32"):
            precision, run, reason = _cascade_or_exact(model, precision, run, reason, recheck, shape)
    log.info("%s runs %s on cpu: %s", model.tag, precision, reason)
    return Classifier(
        run,
        spec,
        tag=str(model.tag),
        metadata=dict(model.info.metadata),
        device="cpu",
        backend="openvino",
        precision=precision,
        precision_reason=reason,
    )


def _cascade_or_exact(
    model: bentoml.Model, exact: Precision, run: Runtime, reason: str, recheck: Recheck, shape: tuple[int, int, int]
) -> tuple[Precision, Runtime, str]:
    """The rule's exact precision, or the cascade over it where its measurement is within the bound and
    this CPU runs it MIN_GAIN faster; and why."""
    if recheck.drop_pp_upper > MAX_INT8_DROP_PP:
        return exact, run, f"{reason}; nor int8 re-checked in {exact} ({recheck})"
    int8 = _compile(model, "int8")
    measured = probe(int8, run, exact, recheck.rechecked, shape)
    if not measured.worth:
        return exact, run, f"{reason}; int8 re-checked in {exact} is not {MIN_GAIN:.0%} faster here: {measured}"
    why = f"int8 re-checked in {exact} is within {MAX_INT8_DROP_PP} pp of fp32 ({recheck}), and on this CPU {measured}"
    return CASCADE, Cascade(int8, run, recheck.margin, shape), why


def _compile(model: bentoml.Model, precision: Precision) -> Runtime:
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
    return compile_ir(xml, precision)
