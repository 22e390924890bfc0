"""int8 re-checked in the exact precision: which images are re-checked, what each answer comes from, the
margin's choice, its record in the IR, and the speed probe that decides at start."""

from __future__ import annotations

import dataclasses

import numpy as np
import openvino
import pytest
import torch
from prometheus_client import REGISTRY

from model_store import ModelSpec, load_classifier
from model_store.architecture import as_arrays, from_spec
from model_store.cascade import MARGINS, Cascade, Probe, answers, choose_margin, lead_change, near_ties, padded
from model_store.checkpoint import Checkpoint
from model_store.inference import softmax
from model_store.openvino_ir import Int8Accuracy, Recheck, compile_ir, ir_path
from model_store.registry import register

from .test_registry import int8_of

SHAPE = (3, 32, 32)
CLOSE = Recheck(3.0, "10,000 training images", 0.164, 92.65, 92.65, 20_000, "held-out views", 1, 1)


def rechecked() -> float:
    return REGISTRY.get_sample_value("pyramidnet_rechecked_images_total") or 0.0


def test_only_the_near_ties_are_re_checked_and_each_answer_comes_from_the_model_that_decided_it():
    batch = np.arange(5 * 3 * 32 * 32, dtype=np.float32).reshape(5, *SHAPE)
    int8_logits = np.array([[5, 0, 0], [1, 0.5, 0], [0, 3, 0.1], [2, 1.5, 1.9], [0, 0, 9]], dtype=np.float32)
    seen = []

    def exact(x: np.ndarray) -> np.ndarray:
        seen.append(x.copy())
        return np.full((len(x), 3), -7.0, dtype=np.float32) + x[:, :1, 0, 0]

    before = rechecked()
    out = Cascade(lambda x: int8_logits, exact, 1.0, SHAPE)(batch)
    near = near_ties(int8_logits, 1.0)
    assert near.tolist() == [False, True, False, True, False]
    assert np.array_equal(out[~near], int8_logits[~near])  # int8's where it decided
    (sent,) = seen
    assert len(sent) == padded(2) == 2  # one batch of the near ties
    assert np.array_equal(sent, batch[near])
    assert np.array_equal(out[near], exact(batch[near]))  # the exact precision's where it re-checked
    assert rechecked() == before + 2


def test_the_re_checked_images_go_padded_to_a_power_of_two():
    int8_logits = np.zeros((7, 3), dtype=np.float32)  # every one a tie
    sizes = []
    Cascade(lambda x: int8_logits, lambda x: sizes.append(len(x)) or np.zeros((len(x), 3), np.float32), 1.0, SHAPE)(
        np.zeros((7, *SHAPE), dtype=np.float32)
    )
    assert sizes == [8]
    assert [padded(n) for n in (1, 2, 3, 5, 9, 16)] == [1, 2, 4, 8, 16, 16]


def test_the_margin_is_the_smallest_that_covers_int8s_largest_move_of_the_lead():
    exact = np.array([[4.0, 1.0, 0.0], [0.0, 2.0, 1.0]], dtype=np.float32)
    int8 = exact + np.array([[0.0, 1.2, 0.0], [0.0, 0.0, 0.4]], dtype=np.float32)  # leads moved by 1.2 and 0.4
    assert lead_change(int8, exact).tolist() == pytest.approx([1.2, 0.4])
    assert choose_margin(int8, exact) == 1.5
    assert choose_margin(int8 * 0, exact * 50) is None  # no margin of MARGINS is that large
    cascade, near = answers(int8, exact, 1.5)
    assert near.tolist() == [False, True]
    assert cascade.tolist() == [0, 1]
    assert max(MARGINS) == 6.0


def test_the_measurement_round_trips_through_the_ir_and_its_bound_is_the_rules():
    x = openvino.opset13.parameter([1], name="x")
    graph = openvino.Model([openvino.opset13.relu(x)], [x], "tiny")
    assert Recheck.recorded(graph) is None
    CLOSE.record(graph)
    assert Recheck.recorded(graph) == CLOSE
    assert CLOSE.drop_pp_upper <= 0.1  # 1 lost, 1 gained of 20,000
    assert "margin 3: 16.4 % re-checked" in str(CLOSE)


@pytest.mark.parametrize(
    ("int8_s", "exact_s", "recheck_s", "worth"),
    [
        (0.010, 0.020, 0.006, True),
        (0.017, 0.0245, 0.0073, False),
        (0.010, 0.020, 0.007, True),
        (0.01, 0.02, 0.008, False),
    ],
)
def test_the_probe_takes_the_cascade_only_where_it_is_at_least_15_percent_faster(int8_s, exact_s, recheck_s, worth):
    measured = Probe("bf16", 16, 3, int8_s, exact_s, recheck_s)
    assert measured.worth is worth
    assert f"{exact_s / (int8_s + recheck_s):.2f}× bf16" in str(measured)


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """A small model whose int8 IR records a re-check measurement within the bound."""
    torch.manual_seed(5)
    spec = ModelSpec(num_layers=1)
    plain = Checkpoint(state_dict=as_arrays(from_spec(spec)), sha256="ef" * 32, source="test:cascade")
    far = Int8Accuracy(int8_top1=92.3, fp32_top1=92.9, images=1000, on="held-out images", losses=9, gains=3)
    made = tmp_path_factory.mktemp("made")
    graph = openvino.Core().read_model(int8_of(plain, spec, made, far))
    CLOSE.record(graph)
    openvino.save_model(graph, made / "recorded.xml", compress_to_fp16=False)  # not over the file read
    return register(dataclasses.replace(plain, int8_ir=made / "recorded.xml"), name="with-cascade", spec=spec)


@pytest.mark.parametrize("faster", [True, False])
def test_the_rule_serves_the_cascade_only_where_this_cpu_runs_it_faster(stored, monkeypatch, faster):
    measured = Probe("x", 16, 3, 0.010, 0.020, 0.001 if faster else 0.015)
    monkeypatch.setattr("model_store.loading.probe", lambda *a, **k: dataclasses.replace(measured, exact_name=a[2]))
    served = load_classifier(stored, device="cpu")
    exact = "bf16" if "bf16" in served.precision_reason.split("re-checked in ")[1][:5] else "fp32"
    if faster:
        assert served.precision == "int8+recheck"
        assert f"int8 re-checked in {exact} is within 0.1 pp of fp32 (margin 3:" in served.precision_reason
        assert "the cascade 11.0 ms, 1.82×" in served.precision_reason
    else:
        assert served.precision == exact
        assert f"int8 re-checked in {exact} is not 15% faster here: a batch of 16" in served.precision_reason


def test_asked_for_the_cascade_is_int8_with_the_exact_precision_on_the_near_ties(stored):
    served = load_classifier(stored, device="cpu", precision="int8+recheck")
    assert served.precision == "int8+recheck"
    exact_name = served.precision_reason.split("re-checked in ")[1].split(" ")[0]
    batch = np.random.default_rng(3).standard_normal((9, *SHAPE)).astype(np.float32)
    int8 = compile_ir(ir_path(stored.path, "int8"), "int8")(batch)
    exact = compile_ir(ir_path(stored.path, "fp32"), exact_name)(batch)
    near = near_ties(int8, CLOSE.margin)
    expected = softmax(np.where(near[:, None], exact, int8))
    assert np.array_equal(served.predict_proba(batch), expected)
    served.warm_up([1, 2, 4])


def test_a_model_without_a_measured_margin_cannot_be_asked_for_the_cascade(tmp_path):
    torch.manual_seed(6)
    spec = ModelSpec(num_layers=1)
    plain = Checkpoint(state_dict=as_arrays(from_spec(spec)), sha256="fa" * 32, source="test:no-cascade")
    model = register(dataclasses.replace(plain, int8_ir=int8_of(plain, spec, tmp_path, None)), name="no", spec=spec)
    with pytest.raises(FileNotFoundError, match="no int8 model with a re-check margin"):
        load_classifier(model, device="cpu", precision="int8+recheck")
