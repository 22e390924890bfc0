"""Training-step throughput of PyramidNet-110 on the CPU: fp32 against bf16 autocast, in one process.

    python -m bench.train_step --steps 8 --batch-size 128

One step is what scripts/train.py does per batch: forward, label-smoothed loss, backward, Nesterov
SGD. Each setting gets two warm-up steps, then `--steps` timed ones; prints images/s and the ratio
to fp32. The figures behind train.py's choice of bf16 autocast where the CPU computes it natively.
"""

from __future__ import annotations

import argparse
import time
from contextlib import nullcontext

import torch
import torch.nn.functional as F

from model_store import ModelSpec
from model_store.architecture import from_spec
from model_store.openvino_ir import native_bf16

SETTINGS = {
    "fp32": (nullcontext, torch.contiguous_format),
    "fp32, channels_last": (nullcontext, torch.channels_last),
    "bf16 autocast": (lambda: torch.autocast("cpu", dtype=torch.bfloat16), torch.contiguous_format),
    "bf16 autocast, channels_last": (lambda: torch.autocast("cpu", dtype=torch.bfloat16), torch.channels_last),
}


def images_per_second(amp, memory_format: torch.memory_format, batch_size: int, steps: int) -> float:
    torch.manual_seed(0)
    model = from_spec(ModelSpec()).to(memory_format=memory_format).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    x = torch.randn(batch_size, 3, 32, 32).contiguous(memory_format=memory_format)
    y = torch.randint(0, 10, (batch_size,))
    for i in range(2 + steps):
        if i == 2:
            start = time.perf_counter()
        with amp():
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=0.1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return batch_size * steps / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args(argv)
    native = "native" if native_bf16() else "emulated (no AVX512_BF16 or AMX)"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch_size}, bf16 {native}")
    baseline = None
    for name, (amp, memory_format) in SETTINGS.items():
        rate = images_per_second(amp, memory_format, args.batch_size, args.steps)
        baseline = baseline or rate
        print(f"{name:30s} {rate:7.1f} img/s  {rate / baseline:4.2f}x fp32  {50_000 / rate / 60:5.1f} min/epoch")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
