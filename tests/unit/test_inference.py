"""The loaded model: shapes, out-of-memory splitting, failure accounting for readiness."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from model_store import Classifier, ModelSpec
from model_store.architecture import from_spec
from model_store.backends import torch_classifier


class FlakyNet(nn.Module):
    """Wraps a real network; raises out-of-memory above `max_batch`, or always when `broken`."""

    def __init__(self, inner: nn.Module, max_batch: int = 1_000_000) -> None:
        super().__init__()
        self.inner = inner
        self.max_batch = max_batch
        self.broken = False
        self.batch_sizes: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batch_sizes.append(len(x))
        if self.broken:
            raise RuntimeError("device lost")
        if len(x) > self.max_batch:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return self.inner(x)


def classifier(module: nn.Module) -> Classifier:
    # eager: the fused backends trace the module once and would bake in its failure switches
    return torch_classifier(module, ModelSpec(), tag="t:1", metadata={}, device="cpu", backend="eager")


@pytest.fixture(scope="module")
def net() -> nn.Module:
    torch.manual_seed(0)
    return from_spec(ModelSpec()).eval()


def test_out_of_memory_splits_the_batch_and_returns_every_row(net):
    batch = np.random.default_rng(0).standard_normal((20, 3, 32, 32), dtype=np.float32)
    expected = classifier(net).predict_proba(batch)
    flaky = FlakyNet(net, max_batch=6)
    result = classifier(flaky).predict_proba(batch)
    assert result.shape == (20, 10)
    np.testing.assert_allclose(result, expected, rtol=0, atol=1e-6)
    succeeded = [n for n in flaky.batch_sizes if n <= 6]
    assert flaky.batch_sizes[:2] == [20, 10]
    assert sum(succeeded) == 20


def test_out_of_memory_on_a_single_image_is_raised(net):
    # Every runtime reports out-of-memory as MemoryError: the torch backend says what torch raised.
    with pytest.raises(MemoryError) as raised:
        classifier(FlakyNet(net, max_batch=0)).predict_proba(np.zeros((1, 3, 32, 32), np.float32))
    assert isinstance(raised.value.__cause__, torch.OutOfMemoryError)


def test_repeated_failures_make_it_unhealthy_until_a_success(net):
    flaky = FlakyNet(net)
    model = classifier(flaky)
    x = np.zeros((2, 3, 32, 32), np.float32)
    flaky.broken = True
    for _ in range(Classifier.FAILURES_BEFORE_UNHEALTHY):
        assert model.healthy
        with pytest.raises(RuntimeError, match="device lost"):
            model.predict_proba(x)
    assert not model.healthy
    flaky.broken = False
    model.predict_proba(x)
    assert model.healthy


def test_wrong_input_shape_is_refused(net):
    with pytest.raises(ValueError, match=r"\(N, 3, 32, 32\)"):
        classifier(net).predict_proba(np.zeros((2, 32, 32, 3), np.float32))
