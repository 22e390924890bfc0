"""The model store in-process: round trip, metadata, pickle-free weights, and saves that leave nothing behind."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import bentoml
import numpy as np
import openvino
import pytest
import safetensors.torch
import torch
from PIL import Image

from model_store import ModelSpec, load_classifier, read_spec
from model_store.architecture import as_arrays, build_network, from_spec
from model_store.backends import load_network
from model_store.checkpoint import Checkpoint, CheckpointError
from model_store.conversion import build_ir, quantize_ir, save_ir
from model_store.evaluation import verdict
from model_store.imaging import preprocess_batch
from model_store.inference import softmax
from model_store.openvino_ir import Int8Accuracy, compile_ir, ir_path
from model_store.pth import read_checkpoint
from model_store.registry import SHIPPED_WEIGHTS, RegistrationError, embedded_default, register
from model_store.store import SPEC_FILE, WEIGHTS_FILE

from ..checkpoints import shipped_as_pth


def backed(metadata) -> bool | None:
    """What a stored model's metadata backs (/model_info's `trained`)."""
    return verdict(metadata, 10)[0]


def stored_tags() -> set[str]:
    return {str(m.tag) for m in bentoml.models.list()}


def test_round_trip_gives_identical_outputs(tmp_path, exact_images):
    torch.manual_seed(3)
    source = from_spec(ModelSpec()).eval()
    path = tmp_path / "best_pyramidnet_model.pth"
    torch.save({"model_state_dict": source.state_dict(), "epoch": 42, "best_val_acc": 93.5}, path)

    model = register(read_checkpoint(path), name="roundtrip", labels={"team": "vision"})
    weights = load_classifier(str(model.tag), device="cpu", backend="eager")
    served = load_classifier(str(model.tag), device="cpu", precision="fp32")  # the OpenVINO IR stored at registration

    batch = preprocess_batch([Image.fromarray(i) for i in exact_images[0][:16]], served.spec)
    with torch.no_grad():
        expected = softmax(source(torch.from_numpy(batch)).numpy())
    assert np.array_equal(weights.predict_proba(batch), expected)  # the same weights, bit for bit
    assert (served.backend, served.precision, served.device) == ("openvino", "fp32", "cpu")
    assert np.abs(served.predict_proba(batch) - expected).max() < 1e-5
    assert {p.name for p in (Path(model.path) / "openvino").iterdir()} == {"model.xml", "model.bin"}


def test_a_model_stored_without_its_ir_is_converted_once_on_first_load(tmp_path, exact_images, caplog):
    torch.manual_seed(4)
    spec = ModelSpec(num_layers=1)  # converting is the same at any depth
    source = from_spec(spec).eval()
    path = tmp_path / "older.pth"
    torch.save(source.state_dict(), path)
    model = register(read_checkpoint(path), name="older", spec=spec)
    shutil.rmtree(Path(model.path) / "openvino")  # as a model registered before the IR was stored

    with caplog.at_level("WARNING", logger="model_store.store"):
        first = load_classifier(model, device="cpu", precision="fp32")
    assert "registered without an OpenVINO IR" in caplog.text
    assert {p.name for p in (Path(model.path) / "openvino").iterdir()} == {"model.xml", "model.bin"}
    caplog.clear()
    with caplog.at_level("WARNING", logger="model_store.store"):
        again = load_classifier(model, device="cpu", precision="fp32")
    assert caplog.text == ""  # kept: converted once

    batch = preprocess_batch([Image.fromarray(i) for i in exact_images[0][:8]], first.spec)
    with torch.no_grad():
        expected = softmax(source(torch.from_numpy(batch)).numpy())
    assert np.abs(first.predict_proba(batch) - expected).max() < 1e-5
    assert np.array_equal(again.predict_proba(batch), first.predict_proba(batch))


def test_metadata_and_spec_are_stored_as_data(tmp_path):
    checkpoint = embedded_default()
    model = register(checkpoint, name="meta", labels={"stage": "test"})
    meta = model.info.metadata
    assert backed(meta) is True
    assert meta["measured_images"] == 10_000
    assert meta["weights"] in ("final", "ema")
    assert meta["source"] == f"embedded:{SHIPPED_WEIGHTS.name}"
    assert meta["source_sha256"] == checkpoint.sha256
    assert meta["parameters"] == 1_772_706
    assert meta["openvino_version"] == openvino.__version__
    assert meta["bentoml_version"] == bentoml.__version__
    assert model.info.labels == {"stage": "test"}
    assert read_spec(model) == ModelSpec()
    # Weights are safetensors (no pickle anywhere in the stored model).
    files = {p.name for p in Path(model.path).iterdir()}
    assert {WEIGHTS_FILE, SPEC_FILE} <= files
    assert not any(f.endswith((".pt", ".pth", ".pkl")) for f in files)
    assert Path(model.path_of(WEIGHTS_FILE)).read_bytes()[8:9] == b"{"  # safetensors JSON header


def test_the_stored_weights_are_the_bytes_the_torch_network_saves(tmp_path):
    """Registration writes the weights without torch; a torch network's state dict, saved by safetensors'
    torch side as registration once did, is the same file: models stored either way hold the same bytes."""
    model = register(embedded_default(), name="same-bytes")
    network = build_network(ModelSpec(), embedded_default().state_dict)
    saved = safetensors.torch.save(network.state_dict(), metadata={"format": "pt"})
    assert Path(model.path_of(WEIGHTS_FILE)).read_bytes() == saved


def test_incompatible_checkpoint_leaves_nothing_in_the_store():
    before = stored_tags()
    bad = embedded_default()
    del bad.state_dict["fc_out.weight"]
    with pytest.raises(CheckpointError, match="missing"):
        register(bad, name="never-written")
    assert stored_tags() == before


def test_non_finite_weights_fail_the_smoke_test_and_leave_nothing():
    before = stored_tags()
    bad = embedded_default()
    bad.state_dict["fc_out.bias"] = np.full(10, np.nan, dtype=np.float32)
    with pytest.raises(RegistrationError, match="non-finite"):
        register(bad, name="never-written")
    assert stored_tags() == before


@pytest.mark.parametrize(
    ("metadata", "trained", "warned"),
    [
        ({"measured_top1": 94.6, "measured_images": 10_000}, True, None),
        ({"measured_top1": 11.0, "measured_images": 200, "best_val_acc": 95.0}, False, "no better than chance"),
        ({"best_val_acc": 95.0}, None, "claims best_val_acc 95.0"),
        ({}, None, "nothing backs this model"),
    ],
)
def test_what_the_metadata_backs(metadata, trained, warned):
    verdict_trained, warning = verdict(metadata, 10)
    assert verdict_trained is trained
    assert (warning is None) if warned is None else (warned in warning)


def test_shipped_weights_become_the_trained_embedded_default(tmp_path):
    from model_store.registry import ship_weights

    torch.manual_seed(5)
    trained = from_spec(ModelSpec())
    source = tmp_path / "best_pyramidnet_model.pth"
    torch.save({"model_state_dict": trained.state_dict(), "epoch": 200, "best_val_acc": 95.7}, source)
    shipped = ship_weights(
        read_checkpoint(source),
        tmp_path / "weights" / "default.safetensors",
        measured_top1="95.61",
        measured_images="10000",
        measured_on="the CIFAR-10 test JPEGs",
        training_command="python scripts/train.py ...",
    )
    assert 6.5e6 < shipped.stat().st_size < 7.5e6  # fp32, about 7 MB
    assert b"pickle" not in shipped.read_bytes()[:200]

    checkpoint = embedded_default(shipped=shipped)
    model = register(checkpoint, name="shipped")
    meta = model.info.metadata
    assert backed(meta) is True
    assert meta["measured_top1"] == 95.61
    assert meta["measured_images"] == 10_000
    assert meta["training_command"] == "python scripts/train.py ..."
    assert (meta["epoch"], meta["best_val_acc"]) == (200, 95.7)
    assert meta["source"] == "embedded:default.safetensors"
    loaded = load_network(model).state_dict()
    for key, value in trained.state_dict().items():
        assert torch.equal(loaded[key], value), key


def test_without_its_weights_the_default_refuses_plainly(tmp_path):
    with pytest.raises(RegistrationError, match="weights are missing"):
        embedded_default(shipped=tmp_path / "absent.safetensors")


def test_registering_the_same_weights_again_returns_the_stored_model(tmp_path):
    path = tmp_path / "best_pyramidnet_model.pth"
    shipped_as_pth(path, epoch=3)
    first = register(read_checkpoint(path), name="twice")
    second = register(read_checkpoint(path), name="twice")
    assert first.tag == second.tag
    assert first.tag.version == read_checkpoint(path).sha256[:16]
    assert [str(m.tag) for m in bentoml.models.list("twice")] == [str(first.tag)]


def int8_of(checkpoint: Checkpoint, spec: ModelSpec, folder: Path, accuracy: Int8Accuracy | None) -> Path:
    """An int8 IR of a checkpoint's weights as ship_weights.py makes one: NNCF's, with the weights' sha256 and
    (when given) the accuracy its maker measured recorded in it."""
    xml = save_ir(build_ir(spec, checkpoint.state_dict), folder)
    calibration = np.random.default_rng(0).standard_normal((20, 3, 32, 32)).astype(np.float32)
    graph = openvino.Core().read_model(quantize_ir(xml, calibration))
    graph.set_rt_info(checkpoint.sha256, ["pyramidnet", "weights_sha256"])
    if accuracy is not None:
        accuracy.record(graph)
    out = folder / "shipped-int8.xml"
    openvino.save_model(graph, out, compress_to_fp16=False)
    return out


def test_a_checkpoint_that_comes_with_its_int8_model_is_stored_and_served_with_it(tmp_path):
    torch.manual_seed(5)
    spec = ModelSpec(num_layers=1)
    state = as_arrays(from_spec(spec))
    plain = Checkpoint(state_dict=state, sha256="ab" * 32, source="test:plain")
    measured = Int8Accuracy(int8_top1=92.89, fp32_top1=92.9, images=10_000, on="held-out images", losses=2, gains=1)
    ir = int8_of(plain, spec, tmp_path / "made", measured)

    model = register(dataclasses.replace(plain, int8_ir=ir), name="with-int8", spec=spec)
    stored = ir_path(model.path, "int8")
    assert stored.read_bytes() == ir.read_bytes()
    assert stored.with_suffix(".bin").read_bytes() == ir.with_suffix(".bin").read_bytes()
    served = load_classifier(model, device="cpu")  # auto: measured within the bound, so int8
    assert (served.precision, served.backend) == ("int8", "openvino")
    assert "within 0.1 pp of fp32 (92.89 % against 92.90 % on 10,000 held-out images" in served.precision_reason
    batch = np.random.default_rng(1).standard_normal((5, 3, 32, 32)).astype(np.float32)
    assert np.array_equal(served.predict_proba(batch), softmax(compile_ir(ir, "int8")(batch)))

    # Never measured: served only when asked for.
    unmeasured = dataclasses.replace(plain, sha256="cd" * 32, source="test:unmeasured")
    model = register(
        dataclasses.replace(unmeasured, int8_ir=int8_of(unmeasured, spec, tmp_path / "u", None)), name="u", spec=spec
    )
    assert load_classifier(model, device="cpu").precision in ("bf16", "fp32")
    assert load_classifier(model, device="cpu", precision="int8").precision == "int8"


def test_an_int8_model_made_from_other_weights_is_refused_and_nothing_is_stored(tmp_path):
    torch.manual_seed(6)
    spec = ModelSpec(num_layers=1)
    state = as_arrays(from_spec(spec))
    other = Checkpoint(state_dict=state, sha256="ef" * 32, source="test:other")
    ir = int8_of(other, spec, tmp_path, None)
    before = stored_tags()
    with pytest.raises(RegistrationError, match="was not made from test:mine"):
        register(Checkpoint(state_dict=state, sha256="01" * 32, source="test:mine", int8_ir=ir), name="mine", spec=spec)
    assert stored_tags() == before


def test_a_stored_model_without_an_int8_model_gains_the_one_its_checkpoint_brings(tmp_path):
    torch.manual_seed(7)
    spec = ModelSpec(num_layers=1)
    state = as_arrays(from_spec(spec))
    checkpoint = Checkpoint(state_dict=state, sha256="23" * 32, source="test:upgrade")
    model = register(checkpoint, name="upgrade", spec=spec)  # as stored before the package shipped an int8 model
    assert not ir_path(model.path, "int8").is_file()
    ir = int8_of(checkpoint, spec, tmp_path, None)
    again = register(dataclasses.replace(checkpoint, int8_ir=ir), name="upgrade", spec=spec)
    assert again.tag == model.tag
    assert ir_path(again.path, "int8").read_bytes() == ir.read_bytes()
    assert sorted(p.name for p in ir_path(again.path, "int8").parent.iterdir()) == [
        "model-int8.bin",
        "model-int8.xml",
        "model.bin",
        "model.xml",
    ]  # no scratch folder left behind
