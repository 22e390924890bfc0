"""int8 with the exact precision re-checking the near ties (`int8+recheck`): the exact precision's
answers at nearly int8's speed, where int8 is fast.

Every image runs in int8. Those whose int8 top two logits are less than the margin apart run again
in the exact precision (fp32, or bf16 where the CPU computes it natively and the rule accepts it),
and take its logits: int8 changes an image's answer only where it moves the top class's lead by
more than the lead itself, and the margin bounds that move. The margin is the int8 IR's
(`openvino_ir.Recheck`): `scripts/ship_weights.py` chooses it on training images and judges it on
the hold-out. The images re-checked go as one batch, padded to a power of two: the shapes the
warm-up prepares, so that no request pays for a cold shape.

Whether the cascade is worth it depends on the CPU: int8 is 1.7× bf16 on a Zen 4 EPYC, 2× fp32 on
an AVX2-only one, and no faster than fp32 on a Zen 1. `probe` times both precisions on this CPU at
start; the cascade is served only where its expected cost beats the exact precision's by
`MIN_GAIN` (loading.py).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from . import telemetry
from .openvino_ir import Runtime

MIN_GAIN = 0.15
"""How much less than the exact precision's time the cascade must be expected to take to be served."""


def near_ties(logits: np.ndarray, margin: float) -> np.ndarray:
    """Which rows' top two logits are less than `margin` apart."""
    top_two = np.partition(logits, -2, axis=1)[:, -2:]
    return (top_two[:, 1] - top_two[:, 0]) < margin


def padded(n: int) -> int:
    """The batch the re-checked images of a request go in: the next power of two."""
    return 1 << (n - 1).bit_length()


class Cascade:
    """A Runtime: `int8` on every image, `exact` on the near ties; counts the images re-checked
    (`pyramidnet_rechecked_images`)."""

    def __init__(self, int8: Runtime, exact: Runtime, margin: float, shape: tuple[int, int, int]) -> None:
        self.int8, self.exact, self.margin, self.shape = int8, exact, margin, shape

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        logits = np.array(self.int8(batch), dtype=np.float32)
        near = near_ties(logits, self.margin)
        if n := int(near.sum()):
            picked = batch[near]
            room = np.zeros((padded(n) - n, *batch.shape[1:]), dtype=batch.dtype)
            logits[near] = self.exact(np.concatenate([picked, room]) if len(room) else picked)[:n]
            telemetry.RECHECKED.inc(n)
        return logits

    def warm_up(self, batch_sizes: Iterable[int]) -> None:
        """The exact precision's shapes the re-checks use (int8's are warmed through __call__)."""
        for n in sorted({padded(n) for n in batch_sizes}):
            self.exact(np.zeros((n, *self.shape), dtype=np.float32))


@dataclass(frozen=True)
class Probe:
    """Seconds for a batch of `batch` images in int8 and in the exact precision, and for the padded
    batch its expected re-checked images (`rechecked` of them) take in the exact precision."""

    exact_name: str
    batch: int
    rechecked: int
    int8_s: float
    exact_s: float
    recheck_s: float

    @property
    def cascade_s(self) -> float:
        return self.int8_s + self.recheck_s

    @property
    def worth(self) -> bool:
        return self.cascade_s <= (1 - MIN_GAIN) * self.exact_s

    def __str__(self) -> str:
        ms = 1000
        return (
            f"a batch of {self.batch} took {self.int8_s * ms:.1f} ms in int8 and {self.exact_s * ms:.1f} ms in "
            f"{self.exact_name}; with its {self.rechecked} expected re-checks ({self.recheck_s * ms:.1f} ms) "
            f"the cascade {self.cascade_s * ms:.1f} ms, {self.exact_s / self.cascade_s:.2f}× {self.exact_name}"
        )


def probe(
    int8: Runtime, exact: Runtime, exact_name: str, share: float, shape: tuple[int, int, int], batch: int = 16
) -> Probe:
    """Time both precisions on this CPU: warm, then the best of three runs of each batch."""
    images = np.random.default_rng(0).standard_normal((batch, *shape), dtype=np.float32)
    rechecked = max(1, math.ceil(share * batch))
    runs = {"int8": (int8, images), "exact": (exact, images), "recheck": (exact, images[: padded(rechecked)])}
    seconds = {}
    for name, (run, x) in runs.items():
        run(x)
        times = []
        for _ in range(3):
            start = time.perf_counter()
            run(x)
            times.append(time.perf_counter() - start)
        seconds[name] = min(times)
    return Probe(exact_name, batch, rechecked, seconds["int8"], seconds["exact"], seconds["recheck"])


MARGINS = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0)


def answers(int8_logits: np.ndarray, exact_logits: np.ndarray, margin: float) -> tuple[np.ndarray, np.ndarray]:
    """The cascade's top-1 classes, from both precisions' logits of the same images, and which it re-checked."""
    near = near_ties(int8_logits, margin)
    return np.where(near, exact_logits.argmax(1), int8_logits.argmax(1)), near


def lead_change(int8_logits: np.ndarray, exact_logits: np.ndarray) -> np.ndarray:
    """Per image, the most int8 moves its top class's lead over any other class: the exact precision
    answers differently only where this exceeds int8's own lead over the runner-up."""
    top = int8_logits.argmax(1)[:, None]
    lead_8, lead_exact = (np.take_along_axis(z, top, 1) - z for z in (int8_logits, exact_logits))
    return np.abs(lead_8 - lead_exact).max(1)


def choose_margin(int8_logits: np.ndarray, exact_logits: np.ndarray) -> float | None:
    """The smallest of MARGINS at least the largest move int8 makes to its top class's lead on the images
    given (training images outside the hold-out: scripts/ship_weights.py): on them, no answer outside the
    re-checked ones can differ from the exact precision's. None if no margin is that large."""
    largest = float(lead_change(int8_logits, exact_logits).max())
    return next((margin for margin in MARGINS if margin >= largest), None)
