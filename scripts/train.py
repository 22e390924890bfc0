"""Train PyramidNet-110 (alpha 48) on CIFAR-10: GPU-first, resumable in pieces, seed-format output.

    python scripts/train.py --data DATA --epochs 200 --out best_pyramidnet_model.pth
    python scripts/train.py --data DATA --epochs 200 --resume            # the next piece

DATA holds train/<class>/*.jpg and test/<class>/*.jpg (the layout of ../shared/data/cifar10 once
unpacked). The images are decoded once into one uint8 tensor on the device; augmentation (random
crop with 4-pixel zero padding, horizontal flip) runs there too. SGD with Nesterov momentum and
weight decay, linear warm-up then cosine decay, label smoothing, bf16 autocast and channels_last
on CUDA. `--time-limit-min` ends a piece cleanly at an epoch boundary so a run can be split into
pieces of under ten minutes; `--resume` continues from `<out>.last` exactly. The best model by
test accuracy is written to `--out` as {"model_state_dict", "epoch", "best_val_acc"}, the format
scripts/save_model.py registers.
"""

from __future__ import annotations

import argparse
import logging
import math
import random
import time
from contextlib import nullcontext
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from model_store import CIFAR10_CLASSES, ModelSpec, resolve_device

log = logging.getLogger("train")


def load_split(root: Path, limit_per_class: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (N, 32, 32, 3) images and int64 labels from <root>/<class>/*.jpg, in class order."""
    images, labels = [], []
    for label, name in enumerate(CIFAR10_CLASSES):
        files = sorted((root / name).glob("*.jpg"))[:limit_per_class]
        for path in files:
            with Image.open(path) as image:
                images.append(np.asarray(image.convert("RGB"), dtype=np.uint8))
            labels.append(label)
    if not images:
        raise SystemExit(f"train: error: no images under {root}/<class>/*.jpg")
    return np.stack(images), np.asarray(labels, dtype=np.int64)


def to_device(images: np.ndarray, labels: np.ndarray, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 NHWC -> uint8 NCHW on the device (4x less memory than float; normalised per batch)."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous().to(device), torch.from_numpy(labels).to(device)


def normalize(x: torch.Tensor, spec: ModelSpec) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> float32 normalised, the same arithmetic as model_store.imaging.normalize."""
    mean = torch.tensor(spec.mean, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, device=x.device).view(1, 3, 1, 1)
    return ((x.float() / 255) - mean) / std


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random 32x32 crop of the 4-pixel zero-padded image, and a horizontal flip half the time."""
    n, c, h, w = x.shape
    padded = F.pad(x, (4, 4, 4, 4))
    dy = torch.randint(0, 9, (n,), device=x.device, generator=generator)
    dx = torch.randint(0, 9, (n,), device=x.device, generator=generator)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None].expand(n, c, h, w + 8)
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :].expand(n, c, h, w)
    cropped = padded.gather(2, rows).gather(3, cols)
    flip = torch.rand(n, device=x.device, generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], cropped.flip(3), cropped)


def lr_at(step: int, total: int, warmup: int, peak: float) -> float:
    """Linear warm-up to `peak`, then cosine decay to zero."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * 0.5 * (1 + math.cos(math.pi * progress))


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, spec: ModelSpec, batch: int, amp) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(x), batch):
        with amp():
            logits = model(normalize(x[i : i + batch], spec).contiguous(memory_format=torch.channels_last))
        correct += (logits.argmax(1) == y[i : i + batch]).sum().item()
    return 100.0 * correct / len(x)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="folder with train/ and test/")
    parser.add_argument("--out", type=Path, default=Path("best_pyramidnet_model.pth"))
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.1, help="peak learning rate for --batch-size 128 (scaled linearly)")
    parser.add_argument("--weight-decay", type=float, default=5e-4)
    parser.add_argument("--warmup-epochs", type=float, default=5)
    parser.add_argument("--label-smoothing", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--resume", action="store_true", help="continue from <out>.last")
    parser.add_argument("--time-limit-min", type=float, help="end this piece at the first epoch boundary past it")
    parser.add_argument("--limit-per-class", type=int, help="use only this many images per class (tests, smoke runs)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
    spec = ModelSpec()

    started = time.monotonic()
    x_train, y_train = to_device(*load_split(args.data / "train", args.limit_per_class), device)
    x_test, y_test = to_device(*load_split(args.data / "test", args.limit_per_class), device)
    log.info("data: %d train, %d test images on %s (%.1f s)", len(x_train), len(x_test), device, time.monotonic() - started)

    model = spec.build().to(device).to(memory_format=torch.channels_last)
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]  # BN and bias: no weight decay
    peak = args.lr * args.batch_size / 128
    optimizer = torch.optim.SGD(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=peak, momentum=0.9, nesterov=True,
    )  # fmt: skip
    steps_per_epoch = math.ceil(len(x_train) / args.batch_size)
    total_steps = steps_per_epoch * args.epochs
    warmup_steps = int(args.warmup_epochs * steps_per_epoch)
    generator = torch.Generator(device=device).manual_seed(args.seed)
    # bf16 autocast on CUDA; fp32 on the CPU, where bf16 is slow.
    amp = partial(torch.autocast, "cuda", dtype=torch.bfloat16) if cuda else nullcontext

    args.out.parent.mkdir(parents=True, exist_ok=True)
    state_path = args.out.with_suffix(args.out.suffix + ".last")
    start_epoch, best = 1, 0.0
    if args.resume:
        state = torch.load(state_path, map_location=device, weights_only=True)
        model.load_state_dict(state["model_state_dict"])
        optimizer.load_state_dict(state["optimizer_state_dict"])
        generator.set_state(state["generator_state"].cpu())
        torch.set_rng_state(state["cpu_rng_state"].cpu())
        start_epoch, best = state["epoch"] + 1, state["best_val_acc"]
        log.info("resumed after epoch %d (best %.2f %%)", state["epoch"], best)

    for epoch in range(start_epoch, args.epochs + 1):
        model.train()
        order = torch.randperm(len(x_train), device=device, generator=generator)
        loss_sum, seen, epoch_start = 0.0, 0, time.monotonic()
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch}/{args.epochs}", leave=False, unit="batch")
        for i in bar:
            step = (epoch - 1) * steps_per_epoch + i
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, total_steps, warmup_steps, peak)
            idx = order[i * args.batch_size : (i + 1) * args.batch_size]
            inputs = normalize(augment(x_train[idx], generator), spec).contiguous(memory_format=torch.channels_last)
            with amp():
                loss = F.cross_entropy(model(inputs), y_train[idx], label_smoothing=args.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * len(idx)
            seen += len(idx)
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}")
        accuracy = evaluate(model, x_test, y_test, spec, 512, amp)
        if accuracy > best:
            best = accuracy
            torch.save({"model_state_dict": model.state_dict(), "epoch": epoch, "best_val_acc": best}, args.out)
        torch.save(
            {"model_state_dict": model.state_dict(), "optimizer_state_dict": optimizer.state_dict(), "epoch": epoch,
             "best_val_acc": best, "generator_state": generator.get_state(), "cpu_rng_state": torch.get_rng_state()},
            state_path,
        )  # fmt: skip
        log.info("epoch %d/%d  loss %.4f  test acc %.2f %%  best %.2f %%  lr %.4f  %.1f s", epoch, args.epochs,
                 loss_sum / seen, accuracy, best, optimizer.param_groups[0]["lr"], time.monotonic() - epoch_start)  # fmt: skip
        if args.time_limit_min is not None and time.monotonic() - started > args.time_limit_min * 60 and epoch < args.epochs:
            log.info("time limit reached after epoch %d: continue with --resume", epoch)
            return 0
    log.info("done: best test accuracy %.2f %% -> %s", best, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
