"""The benchmarks' arithmetic: figures count only the answers that succeeded."""

from __future__ import annotations

from bench.hey import summarise


def test_benchmark_figures_count_only_the_200s():
    results = [(0.1, 200), (0.2, 200), (0.3, 200), (0.9, 200), (5.0, 503), (0.01, 503)]
    summary = summarise(results, seconds=2.0, images_per_request=4)
    assert summary["codes"] == {200: 4, 503: 2}
    assert summary["requests"] == 6
    assert summary["ok_per_s"] == 2.0
    assert summary["images_per_s"] == 8.0
    assert summary["p50_ms"] == 250.0
    assert summary["p99_ms"] < 900
