"""Training PyramidNet on CIFAR-10, in pieces that resume step for step: the recipe, its steps, and the
loop (scripts/train.py is its command line; its docstring gives the recipe in full). The CPU and a CUDA
GPU take the same path, the device chosen in device.py: the images and their augmentation are tensors
on the device, and the random draws come from the run's CPU generator.

Augmentation is a random crop of the 4-pixel zero-padded image and a horizontal flip, and with a
Cutout size a random square set to the mean colour. SGD with Nesterov momentum, a linear warm-up
then linear decay to zero (or a constant rate), the learning rate a function of the global step
alone; label smoothing; weight decay on conv and linear weights only; the last BN of every residual
block starts at zero; an EMA of the weights; optionally an equal-weight average (SWA) with its
batch norms recomputed, and distillation from cached teacher probabilities. bf16 autocast where the
device computes bf16 natively. The run folder holds state.pt (everything a piece needs to continue
exactly), history.jsonl, and at the end model.pth and summary.json.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn, update_bn
from tqdm import tqdm

from ..architecture import ResidualBlock, build_network, from_spec
from ..devices import Autocast, autocast, choose_device, choose_precision, hardware, memory_format, native_bf16
from ..spec import ModelSpec
from .data import initial_weights, read_split, split_holdout

log = logging.getLogger("train")

EVAL_BATCH = 500
BN_IMAGES = 10_000  # training images the averaged weights' batch-norm statistics are recomputed on
BAR_EVERY = 20  # steps between the progress bar's loss and speed


@dataclass(frozen=True)
class Recipe:
    """What makes two pieces one run: a resumed piece must train with the same recipe."""

    epochs: int
    batch_size: int
    lr: float
    warmup_epochs: float
    weight_decay: float
    label_smoothing: float
    ema_decay: float
    holdout_per_class: int
    limit_per_class: int | None
    precision: str
    seed: int
    cutout: int = 0  # side of the Cutout square in pixels; 0: none. The shipped run used 16
    blocks_per_stage: int = 18  # PyramidNet-110; fewer make a smaller PyramidNet (depth 6 x blocks + 2)
    init: str = ""  # sha256 of the weights a continuation starts from; "": a fresh network
    schedule: str = "linear"  # linear: warm-up, then linear decay to zero; constant: lr throughout
    swa: bool = False  # an equal-weight average of the weights at every epoch's end
    teacher: str = ""  # sha256 of the cached teacher probabilities distilled from; "": none
    distill: float = 0.0  # the KL term's share of the loss (temperature 1)


def to_nchw(images: np.ndarray) -> torch.Tensor:
    """uint8 NHWC -> uint8 NCHW (normalised per batch: 4x less memory than float)."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()


def normalize(x: torch.Tensor, spec: ModelSpec) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> float32 normalised, the same arithmetic as model_store.imaging.normalize."""
    mean = torch.tensor(spec.mean, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, device=x.device).view(1, 3, 1, 1)
    return ((x.float() / 255) - mean) / std


class Draws(NamedTuple):
    """One batch's random augmentation: crop offsets (0-8 rows and columns into the 4-pixel zero-padded
    image), flips, and with Cutout each square's top-left corner (it may lie off the image). Drawn on the
    CPU from the run's generator whatever the device, in one order, so a run draws the same on every
    device and a piece resumes on any."""

    dy: torch.Tensor
    dx: torch.Tensor
    flip: torch.Tensor
    top: torch.Tensor | None = None
    left: torch.Tensor | None = None

    @classmethod
    def draw(cls, n: int, generator: torch.Generator, cutout: int = 0, side: int = 32) -> Draws:
        dy = torch.randint(0, 9, (n,), generator=generator)
        dx = torch.randint(0, 9, (n,), generator=generator)
        flip = torch.rand(n, generator=generator) < 0.5
        if not cutout:
            return cls(dy, dx, flip)
        top = torch.randint(0, side, (n,), generator=generator) - cutout // 2
        left = torch.randint(0, side, (n,), generator=generator) - cutout // 2
        return cls(dy, dx, flip, top, left)

    def to(self, device: torch.device) -> Draws:
        top, left = (None if t is None else t.to(device) for t in (self.top, self.left))
        return Draws(self.dy.to(device), self.dx.to(device), self.flip.to(device), top, left)


def crop_flip(x: torch.Tensor, draws: Draws) -> torch.Tensor:
    """Each image's 32x32 crop of its 4-pixel zero-padded self, mirrored where drawn, on x's device."""
    n, c, h, w = x.shape
    padded = F.pad(x, (4, 4, 4, 4))
    rows = (draws.dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None].expand(n, c, h, w + 8)
    cols = (draws.dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :].expand(n, c, h, w)
    cropped = padded.gather(2, rows).gather(3, cols)
    return torch.where(draws.flip[:, None, None, None], cropped.flip(3), cropped)


def cut_out(x: torch.Tensor, size: int, draws: Draws) -> torch.Tensor:
    """Cutout (DeVries and Taylor, 2017): a size x size square at each drawn corner, clipped at the border,
    set to 0 in every channel, which on a normalised batch is the dataset's mean colour."""
    if draws.top is None or draws.left is None:
        raise ValueError("these draws hold no Cutout squares: draw them with the Cutout size")
    _, _, h, w = x.shape
    span_h, span_w = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
    rows = (span_h >= draws.top[:, None]) & (span_h < draws.top[:, None] + size)
    cols = (span_w >= draws.left[:, None]) & (span_w < draws.left[:, None] + size)
    return x.masked_fill((rows[:, :, None] & cols[:, None, :])[:, None], 0.0)


def augment(x: torch.Tensor, draws: Draws, spec: ModelSpec, cutout: int = 0) -> torch.Tensor:
    """A batch as training sees it: uint8 images on the device, cropped and flipped, normalised, and with
    `cutout` a square of each set to the mean colour."""
    on_device = draws.to(x.device)
    batch = normalize(crop_flip(x, on_device), spec)
    return cut_out(batch, cutout, on_device) if cutout else batch


def lr_at(step: int, total: int, warmup: int, peak: float, schedule: str = "linear") -> float:
    """Linear warm-up to `peak` over `warmup` steps, then linear decay that reaches zero at `total`;
    `constant`: `peak` at every step."""
    if schedule == "constant":
        return peak
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * (total - step) / max(1, total - warmup)


def build_model(spec: ModelSpec) -> nn.Module:
    """The network with the last BN of every residual block at zero: each block starts as the identity."""
    model = from_spec(spec)
    for block in model.modules():
        if isinstance(block, ResidualBlock):
            nn.init.zeros_(block.bn3.weight)
    return model


def read_teacher(path: Path, n_images: int) -> tuple[torch.Tensor, str]:
    """Cached teacher probabilities, (N, classes) float32 in read_split's order, and the file's sha256."""
    data = path.read_bytes()
    with np.load(io.BytesIO(data)) as cache:
        probabilities = cache["probabilities"]
    if len(probabilities) != n_images:
        raise SystemExit(f"train: error: {path} holds {len(probabilities)} images' probabilities, not {n_images}")
    return torch.from_numpy(probabilities.astype(np.float32)), hashlib.sha256(data).hexdigest()


@torch.no_grad()
def recompute_bn(model: nn.Module, images: torch.Tensor, spec: ModelSpec, recipe: Recipe) -> None:
    """Batch-norm statistics for averaged weights, in fp32, from training images augmented as in training
    (crop, flip, Cutout; the same draws every time, from the run's seed): an average of weights needs
    statistics of its own, and the network expects those of the images it was trained on. Statistics of
    the unaugmented images cost the shipped weights 3.1 pp of hold-out top-1 (92.9 % to 89.8 %); of
    these, none (docs/training.md#the-continuation)."""
    generator = torch.Generator().manual_seed(recipe.seed)

    def batches() -> Iterator[torch.Tensor]:
        for i in range(0, len(images), EVAL_BATCH):
            batch = images[i : i + EVAL_BATCH]
            yield augment(batch, Draws.draw(len(batch), generator, recipe.cutout), spec, recipe.cutout)

    update_bn(batches(), model)


def build_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.SGD:
    """Nesterov SGD; weight decay on conv and linear weights, none on BN parameters or biases."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": recipe.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.SGD(groups, lr=recipe.lr, momentum=0.9, nesterov=True)


def learn(
    forward: Callable[[torch.Tensor], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    amp: Autocast,
    recipe: Recipe,
    teacher: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One SGD step on a batch as training sees it: the forward pass under `amp`, the label-smoothed loss (with
    `teacher`, the probabilities of the unaugmented images, the KL term to them), backward, the update. Returns
    (loss, logits), left on the device."""
    with amp():
        logits = forward(inputs)
    loss = F.cross_entropy(logits.float(), targets, label_smoothing=recipe.label_smoothing)
    if teacher is not None:
        kl = F.kl_div(F.log_softmax(logits.float(), 1), teacher, reduction="batchmean")
        loss = (1 - recipe.distill) * loss + recipe.distill * kl
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss, logits


@torch.no_grad()
def top1(model: nn.Module, x: torch.Tensor, y: torch.Tensor, spec: ModelSpec, amp: Autocast) -> float:
    """Top-1 accuracy in percent, in eval mode."""
    model.eval()
    correct = 0
    for i in range(0, len(x), EVAL_BATCH):
        with amp():
            correct += (model(normalize(x[i : i + EVAL_BATCH], spec)).argmax(1) == y[i : i + EVAL_BATCH]).sum().item()
    return 100.0 * correct / len(x)


def save_atomically(obj: Any, path: Path) -> None:
    """torch.save to a temporary file, then rename: a crash never leaves a half-written file."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


class StopRequest:
    """Set by SIGTERM or SIGINT; the loop ends the piece after the step in progress."""

    def __init__(self) -> None:
        self.signal: str | None = None
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, _frame: Any) -> None:
        self.signal = signal.Signals(signum).name


@dataclass(frozen=True)
class Piece:
    """One piece of a run: its data (this project's CIFAR-10 layout), its folder, whether it resumes,
    what a continuation starts from, how often the test set is read, when it ends, where it runs, and
    the command that started the run (recorded in the state and the summary). The device and compilation
    are the piece's, not the recipe's: a run may move between devices (the same draws, the same
    recipe; bit for bit only on the device it began on)."""

    data: Path
    run: Path
    command: str
    resume: bool = False
    init: str | None = None  # default, a .safetensors or a .pth: continue from trained weights
    teacher: Path | None = None  # cached teacher probabilities to distil from
    test_every: int = 5
    time_limit_min: float | None = None
    device: str = "auto"  # device.choose_device
    compile: bool = False  # torch.compile the training step's network (bench.gpu says whether it pays)


def train(piece: Piece, asked: Recipe) -> int:
    """Train one piece of the run `asked` for (its precision may be `auto`; its init, teacher and
    distill are filled in from `piece`): resume it, or start it; end at the time limit, a signal, or
    the run's end, where model.pth and summary.json are written."""
    started = time.monotonic()  # the time limit counts from here: reading the data is part of the piece
    try:
        device = choose_device(piece.device)
    except RuntimeError as e:
        raise SystemExit(f"train: error: {e}") from None
    state_path, history_path = piece.run / "state.pt", piece.run / "history.jsonl"
    if piece.resume and not state_path.exists():
        raise SystemExit(f"train: error: {state_path} does not exist: there is nothing to resume")
    state = torch.load(state_path, map_location="cpu", weights_only=True) if piece.resume else None
    init_weights, init_sha = initial_weights(piece.init) if piece.init else (None, "")
    images, labels = read_split(piece.data, "train", asked.limit_per_class)
    teacher, teacher_sha = read_teacher(piece.teacher, len(labels)) if piece.teacher else (None, "")
    recipe = replace(
        asked,
        precision=choose_precision(asked.precision, device, state and state["recipe"]["precision"]),
        init=init_sha,
        teacher=teacher_sha,
        distill=asked.distill if teacher is not None else 0.0,
    )
    log.info("device: %s (%s)", device, hardware(device))
    log.info("precision: %s (asked: %s)", recipe.precision, asked.precision)
    if recipe.precision == "bf16" and not native_bf16(device):
        log.warning("bf16 on a device without native bf16 is emulated: 0.07x fp32 on an AVX2-only CPU")
    stop = StopRequest()
    spec = ModelSpec(num_layers=recipe.blocks_per_stage)
    torch.manual_seed(recipe.seed)

    train_idx, holdout_idx = split_holdout(labels, recipe.holdout_per_class, recipe.seed)
    x_all, y_all = to_nchw(images), torch.from_numpy(labels)
    x_train, y_train = x_all[train_idx].to(device), y_all[train_idx].to(device)
    x_hold, y_hold = x_all[holdout_idx].to(device), y_all[holdout_idx].to(device)
    teacher_train = teacher[train_idx].to(device) if teacher is not None else None
    bn_images = x_all[train_idx[np.random.default_rng(recipe.seed).permutation(len(train_idx))[:BN_IMAGES]]].to(device)
    test_images, test_labels = read_split(piece.data, "test", recipe.limit_per_class)
    x_test, y_test = to_nchw(test_images).to(device), torch.from_numpy(test_labels).to(device)
    log.info(
        "data: %d train, %d held out, %d test images (%.1f s)",
        len(x_train),
        len(x_hold),
        len(x_test),
        time.monotonic() - started,
    )

    layout = memory_format(device)
    model = build_model(spec) if init_weights is None else build_network(spec, init_weights)
    model = model.to(device, memory_format=layout)  # type: ignore[call-overload]  # torch's stubs omit it
    forward = torch.compile(model, dynamic=False) if piece.compile else model  # the eval passes stay eager
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(recipe.ema_decay), use_buffers=True)
    swa = AveragedModel(model) if recipe.swa else None  # equal weights; its batch norms recomputed
    optimizer = build_optimizer(model, recipe)
    generator = torch.Generator().manual_seed(recipe.seed)
    amp = autocast(recipe.precision, device)
    steps_per_epoch = math.ceil(len(x_train) / recipe.batch_size)
    total_steps = steps_per_epoch * recipe.epochs
    warmup_steps = round(recipe.warmup_epochs * steps_per_epoch)

    piece.run.mkdir(parents=True, exist_ok=True)
    step, sums = 0, {"loss": 0.0, "correct": 0, "seen": 0, "seconds": 0.0}
    order: torch.Tensor | None = None
    clock = {"train_seconds": 0.0, "wall_seconds": 0.0}
    command = piece.command
    if state is not None:
        if state["recipe"] != asdict(recipe):
            raise SystemExit(f"train: error: {state_path} was trained with {state['recipe']}, not {asdict(recipe)}")
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        if swa is not None:
            swa.load_state_dict(state["swa"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        step, order, sums, clock, command = (
            state["step"],
            state["order"],
            state["sums"],
            state["clock"],
            state["command"],
        )
        log.info("resumed at step %d of %d (epoch %d)", step, total_steps, step // steps_per_epoch + 1)
    elif state_path.exists():
        raise SystemExit(f"train: error: {state_path} exists: pass --resume, or choose another --run")
    else:
        history_path.write_text("")
        log.info("recipe: %s", json.dumps(asdict(recipe)))

    mark = time.monotonic()
    # The epoch's summed loss and correct answers stay on the device, read back only when a piece saves, an
    # epoch ends or the bar refreshes: a read per step would stall a GPU's queue at every step.
    tally = torch.tensor([sums["loss"], sums["correct"]], dtype=torch.float64, device=device)

    def read_tally() -> None:
        loss_sum, correct = tally.tolist()
        sums["loss"], sums["correct"] = loss_sum, int(correct)

    def save_state() -> None:
        nonlocal mark
        read_tally()
        clock["wall_seconds"] += time.monotonic() - mark
        mark = time.monotonic()
        save_atomically(
            {
                "recipe": asdict(recipe),
                "command": command,
                "model": model.state_dict(),
                "ema": ema.state_dict(),
                **({"swa": swa.state_dict()} if swa is not None else {}),
                "optimizer": optimizer.state_dict(),
                "generator": generator.get_state(),
                "step": step,
                "order": order,
                "sums": sums,
                "clock": clock,
            },
            state_path,
        )

    def piece_over() -> str | None:
        if stop.signal:
            return stop.signal
        if piece.time_limit_min is not None and time.monotonic() - started > piece.time_limit_min * 60:
            return f"time limit {piece.time_limit_min:g} min"
        return None

    while step < total_steps:
        epoch, first = divmod(step, steps_per_epoch)
        if first == 0:
            order, sums = torch.randperm(len(x_train), generator=generator), dict.fromkeys(sums, 0)
            tally.zero_()
        assert order is not None  # drawn at the epoch's start, or resumed with it
        on_device = order.to(device)
        model.train()
        bar = tqdm(
            range(first, steps_per_epoch),
            desc=f"epoch {epoch + 1}/{recipe.epochs}",
            unit="step",
            initial=first,
            total=steps_per_epoch,
            mininterval=1 if sys.stderr.isatty() else 60,
            leave=False,
        )
        tick = time.monotonic()
        for i in bar:
            lr = lr_at(step, total_steps, warmup_steps, recipe.lr, recipe.schedule)
            for group in optimizer.param_groups:
                group["lr"] = lr
            idx = on_device[i * recipe.batch_size : (i + 1) * recipe.batch_size]
            draws = Draws.draw(len(idx), generator, recipe.cutout)
            inputs = augment(x_train[idx], draws, spec, recipe.cutout).contiguous(memory_format=layout)
            targets, taught = y_train[idx], None if teacher_train is None else teacher_train[idx]
            loss, logits = learn(forward, optimizer, inputs, targets, amp, recipe, taught)
            ema.update_parameters(model)
            step += 1
            now = time.monotonic()
            tally[0] += loss.detach().double() * len(idx)
            tally[1] += (logits.argmax(1) == targets).sum()
            sums["seen"] += len(idx)
            sums["seconds"] += now - tick
            clock["train_seconds"] += now - tick
            tick = now
            if step % BAR_EVERY == 0:
                read_tally()
                seen = sums["seen"]
                bar.set_postfix(loss=f"{sums['loss'] / seen:.3f}", img_s=f"{seen / sums['seconds']:.1f}")
            if i + 1 < steps_per_epoch and (why := piece_over()):
                bar.close()
                save_state()
                log.info("piece ended (%s) at step %d of %d: continue with --resume", why, step, total_steps)
                return 0
        bar.close()
        read_tally()

        epoch += 1
        if swa is not None:
            swa.update_parameters(model)
            recompute_bn(swa.module, bn_images, spec, recipe)
        record = {
            "epoch": epoch,
            "step": step,
            "lr": lr,
            "loss": sums["loss"] / sums["seen"],
            "train_top1": 100.0 * sums["correct"] / sums["seen"],
            "images_per_s": sums["seen"] / sums["seconds"],
            "holdout_top1": top1(model, x_hold, y_hold, spec, amp),
            "holdout_top1_ema": top1(ema.module, x_hold, y_hold, spec, amp),
        }
        if swa is not None:
            record["holdout_top1_swa"] = top1(swa.module, x_hold, y_hold, spec, amp)
        if epoch % piece.test_every == 0 or epoch == recipe.epochs:
            record["test_top1"] = top1(model, x_test, y_test, spec, amp)
            record["test_top1_ema"] = top1(ema.module, x_test, y_test, spec, amp)
            if swa is not None:
                record["test_top1_swa"] = top1(swa.module, x_test, y_test, spec, amp)
        save_state()
        record.update(clock)
        with history_path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        log.info(
            "epoch %d/%d  loss %.4f  train %.2f %%  holdout %.2f %% (EMA %.2f %%%s)%s  %.1f img/s  lr %.4f",
            epoch,
            recipe.epochs,
            record["loss"],
            record["train_top1"],
            record["holdout_top1"],
            record["holdout_top1_ema"],
            f", SWA {record['holdout_top1_swa']:.2f} %" if swa is not None else "",
            f"  test {record['test_top1']:.2f} % (EMA {record['test_top1_ema']:.2f} %"
            + (f", SWA {record['test_top1_swa']:.2f} %" if swa is not None else "")
            + ")"
            if "test_top1" in record
            else "",
            record["images_per_s"],
            lr,
        )
        if step < total_steps and (why := piece_over()):
            log.info("piece ended (%s) after epoch %d: continue with --resume", why, epoch)
            return 0

    weights = {"final": model, "ema": ema.module, "swa": swa and swa.module}
    finish(piece.run, recipe, weights, command, clock, len(x_train), hardware(device))
    return 0


def finish(
    run: Path,
    recipe: Recipe,
    weights: dict[str, nn.Module | None],
    command: str,
    clock: dict[str, float],
    n_train: int,
    machine: str,
) -> None:
    """Write model.pth (the final, EMA or averaged weights, whichever the hold-out prefers; the first
    of them on a tie) and summary.json."""
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    last = history[-1]
    suffix = {"final": "", "ema": "_ema", "swa": "_swa"}
    candidates = [name for name, module in weights.items() if module is not None]
    chosen_name = max(candidates, key=lambda name: last[f"holdout_top1{suffix[name]}"])  # the first of the best
    chosen = weights[chosen_name]
    assert chosen is not None  # a candidate
    holdout = last[f"holdout_top1{suffix[chosen_name]}"]
    state_dict = {k: v.detach().float().cpu().contiguous() for k, v in chosen.state_dict().items()}
    save_atomically(
        {"model_state_dict": state_dict, "epoch": recipe.epochs, "best_val_acc": holdout}, run / "model.pth"
    )
    summary = {
        "weights": chosen_name,
        "epochs": recipe.epochs,
        "recipe": asdict(recipe),
        "holdout_top1": holdout,
        "test_top1_as_trained": last[f"test_top1{suffix[chosen_name]}"],
        "test_top1_raw": last["test_top1"],
        "test_top1_ema": last["test_top1_ema"],
        **({"test_top1_swa": last["test_top1_swa"]} if "test_top1_swa" in last else {}),
        "train_images": n_train,
        "images_seen": n_train * recipe.epochs,
        **{k: round(v, 1) for k, v in clock.items()},
        "images_per_s": round(n_train * recipe.epochs / clock["train_seconds"], 1),  # pauses (kill -STOP) included
        "images_per_s_fastest_epoch": round(max(r["images_per_s"] for r in history), 1),
        "hardware": machine,
        "torch": torch.__version__,
        "command": command,
    }
    (run / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    log.info(
        "done: %s weights, hold-out %.2f %%, test %.2f %% (%s) -> %s",
        summary["weights"],
        holdout,
        summary["test_top1_as_trained"],
        recipe.precision,
        run / "model.pth",
    )
