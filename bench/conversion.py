"""Registration's conversion to OpenVINO's IR: the graph built from the weights (conversion.py),
against the path it replaced (torch.export, then OpenVINO's converter), in one process.

    python -m bench.conversion [--repeat 3]

Prints the seconds each takes on the embedded default's weights, the ratio, and how far apart the
two IRs' logits are on 256 pixel-exact CIFAR-10 test images.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import openvino
import torch

from model_store import ModelSpec, cifar10
from model_store.architecture import as_arrays, build_network
from model_store.conversion import build_ir
from model_store.imaging import normalize
from model_store.registry import embedded_default

from .hey import data_folder


def traced(module: torch.nn.Module, side: int) -> openvino.Model:
    """The former path: torch.export with a dynamic batch, then openvino.convert_model."""
    sample = torch.zeros(2, 3, side, side)
    program = torch.export.export(module, (sample,), dynamic_shapes=({0: torch.export.Dim("batch", max=65536)},))
    graph = openvino.convert_model(program)
    graph.reshape({0: [-1, 3, side, side]})
    return graph


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    spec = ModelSpec()
    module = build_network(spec, embedded_default().state_dict).eval()
    ways = {
        "graph API (served)": lambda: build_ir(spec, as_arrays(module)),
        "torch.export + convert": lambda: traced(module, 32),
    }
    seconds, graphs = {}, {}
    for name, build in ways.items():
        times = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            graphs[name] = build()
            times.append(time.perf_counter() - start)
        seconds[name] = statistics.median(times)
        print(f"{name:<24} {seconds[name]:8.2f} s (median of {args.repeat})", flush=True)
    graph_s, traced_s = seconds.values()
    print(f"the graph API takes {graph_s / traced_s:.4f} of the traced path's time ({traced_s / graph_s:.0f}x faster)")
    batch = normalize(np.load(data_folder() / cifar10.EXACT)["images"][:256], spec)
    core = openvino.Core()
    a, b = (core.compile_model(g, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})(batch)[0] for g in graphs.values())
    print(f"largest logit difference between the two IRs: {np.abs(a - b).max():.2e}")


if __name__ == "__main__":
    main()
