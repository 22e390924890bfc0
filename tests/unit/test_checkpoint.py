"""Checkpoint reading (pth.py): both seed formats, wrapper prefixes, and every way a file is refused; and
the torch-free check of a state dict against the spec (checkpoint.py), held to the torch network's."""

from __future__ import annotations

import io
import os
import pickle
import random
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from model_store.architecture import as_arrays, from_spec, pyramidnet
from model_store.checkpoint import CheckpointError, check_compatible, parameter_count, stored_weights
from model_store.pth import UnsafeCheckpointError, read_checkpoint
from model_store.spec import ModelSpec


@pytest.fixture(scope="module")
def state_dict() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return pyramidnet().state_dict()


def save(path: Path, obj: object, **kwargs) -> Path:
    torch.save(obj, path, **kwargs)
    return path


def test_raw_state_dict(tmp_path, state_dict):
    ckpt = read_checkpoint(save(tmp_path / "raw.pth", state_dict))
    assert ckpt.state_dict.keys() == state_dict.keys()
    assert ckpt.epoch is None
    assert ckpt.best_val_acc is None
    assert len(ckpt.sha256) == 64


def test_training_dict_with_epoch_accuracy_and_optimizer_state(tmp_path, state_dict):
    model = pyramidnet()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    optimizer.step()
    payload = {
        "model_state_dict": state_dict,
        "optimizer_state_dict": optimizer.state_dict(),
        "epoch": 187,
        "best_val_acc": 94.12,
    }
    ckpt = read_checkpoint(save(tmp_path / "best_pyramidnet_model.pth", payload))
    assert (ckpt.epoch, ckpt.best_val_acc) == (187, 94.12)
    assert all(np.array_equal(ckpt.state_dict[k], v.numpy()) for k, v in state_dict.items())


def test_half_precision_weights_are_read_as_float32(tmp_path, state_dict):
    halved = {k: v.bfloat16() if v.is_floating_point() else v for k, v in state_dict.items()}
    ckpt = read_checkpoint(save(tmp_path / "bf16.pth", halved))
    assert ckpt.state_dict["fc_out.weight"].dtype == np.float32
    assert np.array_equal(ckpt.state_dict["fc_out.weight"], halved["fc_out.weight"].float().numpy())
    assert ckpt.state_dict["bn1.num_batches_tracked"].dtype == np.int64


def test_a_tensor_that_is_not_an_array_is_refused_with_its_reason(tmp_path, state_dict):
    sparse = {**state_dict, "fc_out.bias": torch.zeros(10).to_sparse()}
    with pytest.raises(CheckpointError, match="not plain numbers"):
        read_checkpoint(save(tmp_path / "sparse.pth", sparse))


@pytest.mark.parametrize(("num_layers", "alpha", "classes"), [(18, 48, 10), (1, 48, 10), (5, 270, 100), (3, 7.5, 2)])
def test_the_spec_names_the_state_dict_of_the_torch_network(num_layers, alpha, classes):
    """The torch-free shapes registration checks against are the network's own, at any depth and width."""
    spec = ModelSpec(num_layers=num_layers, alpha=alpha, classes=tuple(f"c{i}" for i in range(classes)))
    network = from_spec(spec)
    assert spec.state_shapes() == {k: tuple(v.shape) for k, v in network.state_dict().items()}
    assert parameter_count(stored_weights(spec, as_arrays(network))) == sum(p.numel() for p in network.parameters())


def test_weights_are_stored_as_float32_and_step_counts_as_int64(state_dict):
    mixed = {k: v.double().numpy() if v.is_floating_point() else v.int().numpy() for k, v in state_dict.items()}
    stored = stored_weights(ModelSpec(), mixed)
    assert list(stored) == list(ModelSpec().state_shapes())
    assert {v.dtype for k, v in stored.items() if not k.endswith("num_batches_tracked")} == {np.dtype(np.float32)}
    assert stored["bn1.num_batches_tracked"].dtype == np.int64
    assert stored["bn1.num_batches_tracked"].shape == ()


def test_legacy_serialization_format(tmp_path, state_dict):
    path = save(
        tmp_path / "legacy.pth", {"model_state_dict": state_dict, "epoch": 3}, _use_new_zipfile_serialization=False
    )
    assert read_checkpoint(path).epoch == 3


@pytest.mark.parametrize("prefix", ["module.", "_orig_mod."])
def test_wrapper_prefix_is_stripped(tmp_path, state_dict, prefix):
    wrapped = {prefix + k: v for k, v in state_dict.items()}
    ckpt = read_checkpoint(save(tmp_path / "wrapped.pth", wrapped))
    assert ckpt.state_dict.keys() == state_dict.keys()
    check_compatible(ModelSpec(), ckpt.state_dict)


def test_missing_unexpected_and_mismatched_keys_are_listed(state_dict):
    broken = dict(state_dict)
    del broken["fc_out.bias"]
    broken["projection.weight"] = torch.zeros(1)
    broken["fc_out.weight"] = torch.zeros(100, 64)
    with pytest.raises(CheckpointError) as err:
        check_compatible(ModelSpec(), broken)
    message = str(err.value)
    assert "missing (1): fc_out.bias" in message
    assert "unexpected (1): projection.weight" in message
    assert "fc_out.weight (100, 64) != (10, 64)" in message


def test_a_long_list_of_problems_stays_one_screen(state_dict):
    with pytest.raises(CheckpointError) as err:
        check_compatible(ModelSpec(num_layers=17), state_dict)
    assert "... and" in str(err.value)
    assert len(str(err.value)) < 1500


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "is empty"),
        (random.Random(0).randbytes(4096), "not a PyTorch checkpoint"),
        (b"name,value\n1,2\n", "not a PyTorch checkpoint"),
    ],
    ids=["empty", "random-bytes", "text"],
)
def test_non_checkpoints_are_refused(tmp_path, content, expected):
    path = tmp_path / "x.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=expected):
        read_checkpoint(path)


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.99])
def test_truncated_checkpoint(tmp_path, state_dict, fraction):
    data = save(tmp_path / "full.pth", state_dict).read_bytes()
    path = tmp_path / "cut.pth"
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        read_checkpoint(path)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="cannot read"):
        read_checkpoint(tmp_path / "nope.pth")


def test_not_a_state_dict(tmp_path):
    with pytest.raises(CheckpointError, match="neither a state_dict"):
        read_checkpoint(save(tmp_path / "list.pth", [torch.zeros(1)]))
    with pytest.raises(CheckpointError, match="not tensors"):
        read_checkpoint(save(tmp_path / "mixed.pth", {"w": torch.zeros(1), "note": "hi"}))


class _RunsCode:
    """Unpickling this calls os.system: the attack weights_only=True must stop."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("fmt", ["zip", "legacy", "pickle-2", "pickle-4", "pickle-5"])
def test_a_pickle_that_would_run_code_is_refused_and_never_runs(tmp_path, state_dict, fmt):
    marker = tmp_path / "code-ran"
    payload = {"model_state_dict": state_dict, "epoch": _RunsCode(marker)}
    path = tmp_path / "evil.pth"
    if fmt.startswith("pickle-"):
        path.write_bytes(pickle.dumps(payload, protocol=int(fmt[-1])))
    else:
        save(path, payload, _use_new_zipfile_serialization=(fmt == "zip"))
    # The payload is real: an unrestricted unpickler runs it.
    pickle.loads(pickle.dumps(_RunsCode(tmp_path / "control")))
    assert (tmp_path / "control").exists()

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and without a warning from torch
        with pytest.raises(UnsafeCheckpointError) as err:
            read_checkpoint(path)
    assert not marker.exists()
    assert "arbitrary unpickling" in str(err.value)
    assert f"{os.system.__module__}.system" in str(err.value)  # the offending global, named (posix.system)


def test_a_raw_pickle_of_allowed_types_is_not_called_unsafe(tmp_path):
    path = tmp_path / "plain.pkl"
    path.write_bytes(pickle.dumps({"model_state_dict": {"w": [1.0, 2.0]}}, protocol=4))
    with pytest.raises(CheckpointError) as err:
        read_checkpoint(path)
    assert not isinstance(err.value, UnsafeCheckpointError)


def test_bytes_in_memory_are_hashed_like_files(tmp_path, state_dict):
    from model_store.pth import parse_checkpoint

    path = save(tmp_path / "a.pth", state_dict)
    buf = io.BytesIO(path.read_bytes())
    assert parse_checkpoint(buf.getvalue()).sha256 == read_checkpoint(path).sha256
