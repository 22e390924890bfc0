"""The CPU serving path: OpenVINO running the IR stored beside the weights. Imports no torch.

Registration builds the IR once (conversion.py, registry.py) and stores it in the model's folder:

    openvino/model.xml, .bin          fp32 IR: served as fp32, or as bf16 by OpenVINO's precision hint
    openvino/model-int8.xml, .bin     post-training int8 (NNCF, calibrated on training images), if made

How a batch runs (the measurements: docs/performance/serving.md#the-cpu-runtime-one-stream-per-core): a
batch of one goes to a model compiled for latency, one stream over every core, the fastest way to
answer one image. A larger batch is split over one stream per core. Streams share nothing, so when
an API worker takes a core away for a moment one half waits and the other goes on; the latency
build's threads would stall each other at every layer instead, and spend more CPU per image that
the API workers need.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, ClassVar, Self, cast

import numpy as np
import openvino

from .bentoml_internals import cpu_budget
from .paired import upper_bound_pp

log = logging.getLogger(__name__)

IR_DIR = "openvino"
IR_FILES = {"fp32": "model.xml", "int8": "model-int8.xml"}
# What each precision asks of OpenVINO: the IR it runs, and the inference precision of its float ops.
PLANS = {"fp32": ("fp32", "f32"), "bf16": ("fp32", "bf16"), "int8": ("int8", "f32"), "int8+recheck": ("int8", "f32")}

Runtime = Callable[[np.ndarray], np.ndarray]
"""float32 (N, 3, S, S) normalised images -> float32 (N, C) logits."""


def ir_path(model_dir: str | Path, precision: str) -> Path:
    """Where the IR that `precision` runs lives in a stored model's folder."""
    return Path(model_dir) / IR_DIR / IR_FILES[PLANS[precision][0]]


class _InTheIR:
    """A measurement an int8 IR's maker recorded in it: each field, as a string, in the IR's rt_info
    under `pyramidnet/<KEY>`; the paired counts against fp32 give the drop's bound."""

    KEY: ClassVar[str]
    images: int
    losses: int
    gains: int

    @property
    def drop_pp_upper(self) -> float:
        """A one-sided 95 % upper bound of the drop against fp32, from the paired differences (paired.py)."""
        return upper_bound_pp(self.losses, self.gains, self.images)

    def record(self, graph: openvino.Model) -> None:
        for field, value in asdict(cast(Any, self)).items():
            graph.set_rt_info(str(value), ["pyramidnet", self.KEY, field])

    @classmethod
    def recorded(cls, graph: openvino.Model) -> Self | None:
        """The measurement recorded in an int8 IR; None where its maker recorded none."""
        if not graph.has_rt_info(["pyramidnet", cls.KEY]):
            return None
        types = {"float": float, "int": int, "str": str}
        return cls(
            **{
                f.name: types[str(f.type)](graph.get_rt_info(["pyramidnet", cls.KEY, f.name]).astype(str))
                for f in fields(cast(Any, cls))
            }
        )

    @classmethod
    def stored(cls, model_dir: str | Path) -> Self | None:
        """What a stored model's int8 IR records; None without an int8 IR or the measurement."""
        xml = ir_path(model_dir, "int8")
        return cls.recorded(openvino.Core().read_model(xml)) if xml.is_file() else None


@dataclass(frozen=True)
class Int8Accuracy(_InTheIR):
    """What the int8 IR's maker measured of it against the fp32 model (rt_info `pyramidnet/accuracy`):
    top-1 of both on the same labelled images, none of them test images, and the images on which
    exactly one of the two is right (`losses`: fp32's alone). None for an int8 IR never measured
    (NNCF's plain post-training quantization at registration)."""

    KEY: ClassVar[str] = "accuracy"
    int8_top1: float
    fp32_top1: float
    images: int
    on: str
    losses: int
    gains: int

    @property
    def drop_pp(self) -> float:
        return round(self.fp32_top1 - self.int8_top1, 6)

    def __str__(self) -> str:
        return (
            f"{self.int8_top1:.2f} % against {self.fp32_top1:.2f} % on {self.images:,} {self.on}; the drop's 95 % "
            f"upper bound {self.drop_pp_upper:.2f} pp"
        )


@dataclass(frozen=True)
class Recheck(_InTheIR):
    """int8 with the exact precision re-checking the images whose int8 top two logits are less than
    `margin` apart (cascade.py), as the int8 IR's maker measured it against fp32 (rt_info
    `pyramidnet/recheck`). The margin was chosen on images (`chosen_on`) other than the ones it was
    judged on: `images` views (`on`), where the cascade re-checked the share `rechecked` and was
    right on `top1` % against fp32's `fp32_top1` %, fp32 alone right on `losses`, it alone on `gains`."""

    KEY: ClassVar[str] = "recheck"
    margin: float
    chosen_on: str
    rechecked: float
    top1: float
    fp32_top1: float
    images: int
    on: str
    losses: int
    gains: int

    def __str__(self) -> str:
        return (
            f"margin {self.margin:g}: {self.rechecked * 100:.1f} % re-checked, {self.top1:.2f} % against "
            f"{self.fp32_top1:.2f} % on {self.images:,} {self.on}; the drop's 95 % upper bound "
            f"{self.drop_pp_upper:.2f} pp"
        )


def cpu_threads() -> int:
    """OpenVINO's threads: the CPU budget rounded down. A quota throttles time but leaves every host
    core visible; a thread per visible core would have the throttled ones stall the rest at every
    layer (OpenVINO issue 37838: its own scheduling does not read the quota)."""
    return max(1, int(cpu_budget()))


@functools.cache
def native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512_BF16 or AMX), as OpenVINO reports it. Without,
    OpenVINO would emulate bf16 slowly or fall back to f32 under the bf16 name."""
    return "BF16" in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def compile_ir(ir: Path | openvino.Model, precision: str = "fp32", threads: int | None = None) -> Runtime:
    """The IR (a stored .xml, or a model in memory) compiled for the CPU at `precision` (`fp32`, `bf16`
    or `int8`)."""
    threads = threads or cpu_threads()
    core = openvino.Core()
    graph = ir if isinstance(ir, openvino.Model) else core.read_model(ir)
    common = {"INFERENCE_PRECISION_HINT": PLANS[precision][1], "INFERENCE_NUM_THREADS": threads}
    with ThreadPoolExecutor(1) as pool:  # both builds at once: it shortens the time to ready
        split = pool.submit(
            core.compile_model, graph, "CPU", {**common, "PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": threads}
        )
        latency = core.compile_model(graph, "CPU", {**common, "PERFORMANCE_HINT": "LATENCY"})
        streams = split.result()
    log.info(
        "compiled %s for OpenVINO %s on the CPU: %s, %d threads",
        getattr(ir, "name", "the network in memory"),
        openvino.__version__,
        precision,
        threads,
    )
    local = threading.local()  # infer requests are not thread-safe: each calling thread has its own

    def run(batch: np.ndarray) -> np.ndarray:
        if len(batch) == 1:
            return latency.infer_new_request({0: batch})[0].copy()
        requests = getattr(local, "requests", None)
        if requests is None:
            requests = local.requests = [streams.create_infer_request() for _ in range(threads)]
        parts = np.array_split(batch, min(len(batch), threads))
        active = requests[: len(parts)]  # a batch smaller than the streams leaves some idle
        for request, part in zip(active, parts, strict=True):
            request.start_async({0: part})
        for request in active:
            request.wait()
        return np.concatenate([request.get_output_tensor(0).data for request in active])

    return run
