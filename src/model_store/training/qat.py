"""Quantization-aware training (QAT) of the int8 model of trained weights, on the CPU, in pieces that
resume (scripts/quantize_aware.py is its command line; its docstring gives the method in full).

It starts from NNCF's post-training quantization of the torch network, calibrated on training
images outside the hold-out, then fine-tunes the weights and the quantizers' ranges, batch norms
frozen, so that the int8 network's probabilities match fp32's (the KL divergence to fp32 OpenVINO,
on cropped and flipped training images). The hold-out is never trained on; it is compared on every
`eval_every` steps. The run folder holds state.pt, history.jsonl, and at the end int8.xml (.bin)
and summary.json.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import nncf
import nncf.torch
import numpy as np
import openvino
import torch
import torch.nn.functional as F

from ..architecture import build_network
from ..conversion import CALIBRATION_PER_CLASS, build_ir, named_by_position
from ..devices import hardware
from ..openvino_ir import Runtime, compile_ir
from ..paired import only_right
from ..spec import ModelSpec
from .data import calibration_indices, initial_weights, read_split, split_holdout
from .run import Draws, StopRequest, augment, lr_at, normalize, save_atomically, to_nchw

log = logging.getLogger("quantize_aware")
# NNCF compiles its CPU extension on the first fake-quantized forward pass of a new environment: 19 s on
# the Zen 5 EPYC with the other core busy, which a slower CPU would bring near NNCF's 60 s limit, where it
# gives up with an error. The limit is there to notice a build lock left behind; ten minutes still does.
os.environ.setdefault("NNCF_EXTENSION_LOAD_TIMEOUT", "600")

EVAL_BATCH = 250


@dataclass(frozen=True)
class Recipe:
    """What makes two pieces one run: a resumed piece must train with the same recipe."""

    weights: str  # sha256 of the fp32 weights quantized
    steps: int
    batch_size: int
    lr: float
    holdout_per_class: int
    limit_per_class: int | None
    seed: int
    blocks_per_stage: int


def export(model: torch.nn.Module, spec: ModelSpec) -> openvino.Model:
    """The QAT network as an OpenVINO int8 model shaped as build_ir's: `images` (N, 3, S, S) -> `logits`."""
    model.eval()
    side = spec.input_size
    # Traced here, without torch's trace check (which runs the network twice more): the same IR, byte for byte,
    # in half the time of convert_model's own tracing (docs/performance.md, Quantization-aware training).
    traced = torch.jit.trace(model, torch.zeros(1, 3, side, side), check_trace=False)
    graph = openvino.convert_model(traced, input=[(-1, 3, side, side)])
    graph.inputs[0].get_tensor().set_names({"images"})
    graph.outputs[0].get_tensor().set_names({"logits"})
    return named_by_position(graph)


def compare(int8: Runtime, fp32_logits: np.ndarray, images: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """The int8 network against fp32 on the same normalised images, image by image."""
    logits = np.concatenate([int8(images[i : i + EVAL_BATCH]) for i in range(0, len(images), EVAL_BATCH)])
    int8_right, fp32_right = logits.argmax(1) == labels, fp32_logits.argmax(1) == labels
    losses, gains = only_right(fp32_right, int8_right)
    return {
        "int8_top1": round(float(int8_right.mean() * 100), 2),
        "fp32_top1": round(float(fp32_right.mean() * 100), 2),
        "losses": losses,
        "gains": gains,
        "agreement": round(float((logits.argmax(1) == fp32_logits.argmax(1)).mean() * 100), 2),
    }


@dataclass(frozen=True)
class Piece:
    """One piece of a QAT run: its data (this project's CIFAR-10 layout), its folder, the command that
    started the run, the fp32 weights (default, a .safetensors or a .pth), whether it resumes, how
    often the hold-out is compared, and when it ends."""

    data: Path
    run: Path
    command: str
    weights: str = "default"
    resume: bool = False
    eval_every: int = 150
    time_limit_min: float | None = None


def quantize_aware(piece: Piece, asked: Recipe) -> int:
    """Train one piece of the QAT run `asked` for (its `weights` is filled in: the sha256 of the
    piece's weights); at the run's end write int8.xml and summary.json."""
    state_path, history_path = piece.run / "state.pt", piece.run / "history.jsonl"
    if piece.resume and not state_path.exists():
        raise SystemExit(f"quantize_aware: error: {state_path} does not exist: there is nothing to resume")
    if not piece.resume and state_path.exists():
        raise SystemExit(f"quantize_aware: error: {state_path} exists: pass --resume, or choose another --run")
    started, stop = time.monotonic(), StopRequest()
    weights, sha = initial_weights(piece.weights)
    recipe = replace(asked, weights=sha)
    # The run's own file: NNCF's config in it holds NNCF's classes, which weights_only refuses.
    state = torch.load(state_path, weights_only=False) if piece.resume else None
    if state is not None and state["recipe"] != asdict(recipe):  # before any data is read
        raise SystemExit(
            f"quantize_aware: error: {state_path} was trained with {state['recipe']}, not {asdict(recipe)}"
        )
    spec = ModelSpec(num_layers=recipe.blocks_per_stage)
    images, labels = read_split(piece.data, "train", recipe.limit_per_class)
    train_idx, holdout = split_holdout(labels, recipe.holdout_per_class, recipe.seed)
    x_all = to_nchw(images)
    x_train, held, held_labels = x_all[train_idx], normalize(x_all[holdout], spec).numpy(), labels[holdout]
    fp32 = compile_ir(build_ir(spec, weights), "fp32")
    fp32_held = np.concatenate([fp32(held[i : i + EVAL_BATCH]) for i in range(0, len(held), EVAL_BATCH)])

    torch.manual_seed(recipe.seed)
    network = build_network(spec, weights).eval()
    calibration_idx = calibration_indices(labels, train_idx, CALIBRATION_PER_CLASS)
    calibrated = len(calibration_idx)
    if state is None:
        calibration = normalize(x_all[calibration_idx], spec)
        samples = nncf.Dataset([calibration[i : i + 1] for i in range(len(calibration))])
        model = nncf.quantize(network, samples, subset_size=len(calibration))
    else:
        model = nncf.torch.load_from_config(network, state["nncf"])
        model.load_state_dict(state["model"])
    optimizer = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=0.9)
    generator = torch.Generator().manual_seed(recipe.seed)
    step, clock = 0, {"train_seconds": 0.0, "wall_seconds": 0.0}
    command = piece.command
    piece.run.mkdir(parents=True, exist_ok=True)
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        step, clock, command = state["step"], state["clock"], state["command"]
        log.info("resumed at step %d of %d", step, recipe.steps)
    else:
        history_path.write_text("")
        log.info("recipe: %s", json.dumps(asdict(recipe)))

    def record(**figures: float) -> None:
        with history_path.open("a") as f:
            f.write(json.dumps({"step": step, **figures}) + "\n")
        log.info("step %d: %s", step, figures)

    def save_state() -> None:
        save_atomically(
            {
                "recipe": asdict(recipe),
                "command": command,
                "nncf": nncf.torch.get_config(model),
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "generator": generator.get_state(),
                "step": step,
                "clock": clock,
            },
            state_path,
        )

    if step == recipe.steps:
        log.info("done already: %s", piece.run / "int8.xml")
        return 0
    if step == 0:
        record(**compare(compile_ir(export(model, spec), "int8"), fp32_held, held, held_labels))
    mark = time.monotonic()
    while step < recipe.steps:
        tick = time.monotonic()
        chosen = torch.randint(len(x_train), (recipe.batch_size,), generator=generator)
        batch = augment(x_train[chosen], Draws.draw(recipe.batch_size, generator), spec)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, recipe.steps, 0, recipe.lr)
        target = torch.from_numpy(fp32(batch.numpy())).log_softmax(1)
        model.eval()  # the batch norms keep the statistics fp32 was trained with
        loss = F.kl_div(model(batch).log_softmax(1), target, log_target=True, reduction="batchmean")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        clock["train_seconds"] += time.monotonic() - tick
        graph = export(model, spec) if step % piece.eval_every == 0 or step == recipe.steps else None
        if graph is not None:
            record(
                loss=round(loss.item(), 6),
                images_per_s=round(step * recipe.batch_size / clock["train_seconds"], 1),
                **compare(compile_ir(graph, "int8"), fp32_held, held, held_labels),
            )
        why = stop.signal or (
            f"time limit {piece.time_limit_min:g} min"
            if piece.time_limit_min is not None and time.monotonic() - started > piece.time_limit_min * 60
            else None
        )
        if why and step < recipe.steps:
            clock["wall_seconds"] += time.monotonic() - mark
            save_state()
            log.info("piece ended (%s) at step %d of %d: continue with --resume", why, step, recipe.steps)
            return 0
    clock["wall_seconds"] += time.monotonic() - mark
    assert graph is not None  # the last step exports
    graph.set_rt_info(recipe.weights, ["pyramidnet", "weights_sha256"])
    graph.set_rt_info(
        f"NNCF quantization-aware training: {recipe.steps} steps of {recipe.batch_size} training images distilled "
        f"from fp32, from {calibrated} calibration images outside the hold-out",
        ["pyramidnet", "calibrated_on"],
    )
    scratch = piece.run / "int8.tmp.xml"
    openvino.save_model(graph, scratch, compress_to_fp16=False)
    os.replace(scratch.with_suffix(".bin"), piece.run / "int8.bin")
    os.replace(scratch, piece.run / "int8.xml")
    save_state()  # after the model: a finished run's state says it is done
    summary = {
        "recipe": asdict(recipe),
        "holdout": json.loads(history_path.read_text().splitlines()[-1]),
        **{k: round(v, 1) for k, v in clock.items()},
        "images_per_s": round(recipe.steps * recipe.batch_size / clock["train_seconds"], 1),
        "hardware": hardware(torch.device("cpu")),
        "torch": torch.__version__,
        "nncf": nncf.__version__,
        "command": command,
    }
    (piece.run / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    log.info("done: %s", piece.run / "int8.xml")
    return 0
