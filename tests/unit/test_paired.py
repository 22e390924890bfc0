"""The paired comparison that decides whether one model is measurably better than another on the same images."""

from __future__ import annotations

import numpy as np
import pytest

from model_store.paired import only_right, upper_bound_pp


@pytest.mark.parametrize(
    ("a_only", "b_only", "images", "bound"),
    [
        (0, 0, 1000, 0.1645),  # identical answers: one differing image is assumed, not none
        (10, 30, 1000, -0.965),  # B right on 20 more of 1,000, spread sqrt(39.6): B is better, shown
        (10, 13, 1000, 0.489),  # 3 more: within the noise of 23 differing images
        (5, 4, 1000, 0.593),  # the shipped int8 model against fp32 (docs/performance.md#precision)
    ],
)
def test_the_bound_reads_the_images_that_differ(a_only, b_only, images, bound):
    assert upper_bound_pp(a_only, b_only, images) == pytest.approx(bound, abs=5e-4)


def test_a_gain_is_shown_only_when_the_whole_bound_is_on_its_side():
    assert upper_bound_pp(10, 30, 1000) < 0  # B better: A's advantage is below zero even at its bound
    assert upper_bound_pp(30, 10, 1000) > 0
    assert upper_bound_pp(10, 13, 1000) > 0  # not shown


def test_only_right_counts_the_images_each_model_alone_gets_right():
    a = np.array([True, True, False, False, True])
    b = np.array([True, False, True, False, False])
    assert only_right(a, b) == (2, 1)
    assert only_right(b, a) == (1, 2)
