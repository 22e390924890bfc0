"""Two models on the same images, compared image by image: what decides whether a difference in top-1 is
real. On 1,000 images one image is 0.1 pp, so a measured difference alone cannot tell 0.1 pp from noise."""

from __future__ import annotations

import math

import numpy as np

Z_ONE_SIDED_95 = 1.645


def only_right(a_right: np.ndarray, b_right: np.ndarray) -> tuple[int, int]:
    """From whether each of two models gets each image right: how many images model A alone gets right,
    and how many B alone (what upper_bound_pp reads)."""
    return int((a_right & ~b_right).sum()), int((b_right & ~a_right).sum())


def upper_bound_pp(a_only: int, b_only: int, images: int) -> float:
    """A one-sided 95 % upper bound, in percentage points, of how much more often model A is right than
    model B, from the images exactly one of them gets right (`a_only`, `b_only`): the normal approximation
    to the paired differences, as McNemar's test uses them. The spread counts at least one differing
    image: none differing among few images proves little."""
    net = a_only - b_only
    spread = math.sqrt(max(a_only + b_only - net * net / images, 1.0))
    return round(100 * (net + Z_ONE_SIDED_95 * spread) / images, 6)
