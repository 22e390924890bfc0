"""The OpenVINO graph built from the weights computes the torch network's function."""

from __future__ import annotations

import numpy as np
import openvino
import pytest
import torch

from model_store import ModelSpec
from model_store.architecture import as_arrays, build_network, from_spec
from model_store.conversion import build_ir, save_ir
from model_store.imaging import normalize
from model_store.inference import softmax
from model_store.openvino_ir import compile_ir
from model_store.registry import embedded_default

TOLERANCE = 1e-5


def torch_and_ir(spec: ModelSpec, module: torch.nn.Module, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with torch.inference_mode():
        expected = module.eval()(torch.from_numpy(batch)).numpy()
    return expected, compile_ir(build_ir(spec, as_arrays(module)), "fp32")(batch)


def test_the_shipped_network_as_a_graph_matches_torch_on_exact_test_images(exact_images):
    """64 of them here; all 1,017 through every backend in tests/integration/test_backends.py."""
    spec = ModelSpec()
    module = build_network(spec, embedded_default().state_dict)
    expected, got = torch_and_ir(spec, module, normalize(exact_images[0][:64], spec))
    assert got.shape == (64, 10)
    assert np.abs(softmax(got) - softmax(expected)).max() < TOLERANCE
    assert (got.argmax(1) == expected.argmax(1)).all()


@pytest.mark.parametrize(("num_layers", "alpha", "classes"), [(1, 12, 2), (3, 48, 10), (2, 100, 5)])
def test_any_depth_width_and_class_count_is_built_as_torch_builds_it(num_layers, alpha, classes):
    torch.manual_seed(num_layers)
    spec = ModelSpec(num_layers=num_layers, alpha=alpha, classes=tuple(f"c{i}" for i in range(classes)))
    module = from_spec(spec)
    for m in module.modules():  # trained-looking statistics, so batch norm is not the identity
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    batch = np.random.default_rng(0).standard_normal((5, 3, 32, 32)).astype(np.float32)
    expected, got = torch_and_ir(spec, module, batch)
    assert got.shape == (5, classes)
    assert np.abs(got - expected).max() < TOLERANCE * max(1.0, np.abs(expected).max())


def test_the_graph_takes_any_batch_size():
    spec = ModelSpec(num_layers=1, alpha=8)
    graph = build_ir(spec, as_arrays(from_spec(spec)))
    assert graph.input(0).get_partial_shape().to_string() == "[?,3,32,32]"
    assert isinstance(graph, openvino.Model)


def test_the_same_weights_store_the_same_ir_whatever_was_built_before(tmp_path):
    """Registration in a fresh process and in a busy one store the same files (OpenVINO would otherwise
    name unnamed ops by a process-wide counter)."""
    spec, weights = ModelSpec(), embedded_default().state_dict
    first = save_ir(build_ir(spec, weights), tmp_path / "first")
    for _ in range(2):
        build_ir(ModelSpec(num_layers=2, alpha=12), as_arrays(from_spec(ModelSpec(num_layers=2, alpha=12))))
    again = save_ir(build_ir(spec, weights), tmp_path / "again")
    assert first.read_bytes() == again.read_bytes()
    assert first.with_suffix(".bin").read_bytes() == again.with_suffix(".bin").read_bytes()
