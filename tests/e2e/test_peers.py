"""The designs the benchmarks compare with (the seed's FastAPI app, LitServe) serve the same weights."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from bench.harness import command, free_port, serving
from model_store import load_classifier

from ..parity import PARITY, offline_probabilities, served_probabilities


@pytest.mark.parametrize("design", ["seed_design", "litserve"])
def test_the_designs_compared_with_serve_the_same_weights(design, default_model, sample_jpegs, tmp_path):
    port, env = free_port(), {"PYRAMIDNET_MODEL": str(default_model.tag)}
    with serving(command(design, port), port, env, tmp_path / f"{design}.log") as (url, _):
        answers = [
            httpx.post(url + "/classify", files={"image": p.read_bytes()}, timeout=60) for p in sample_jpegs[:10]
        ]
    results = [a.json() for a in answers if a.status_code == 200]
    assert len(results) == 10, [a.text for a in answers]
    eager = load_classifier(default_model, "cpu", "eager", "fp32")
    assert np.abs(served_probabilities(results) - offline_probabilities(eager, sample_jpegs[:10])).max() < PARITY
