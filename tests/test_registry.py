"""The model store: round trip, metadata, pickle-free weights, and saves that leave nothing behind."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import bentoml
import numpy as np
import pytest
import torch
from PIL import Image

from model_store import ModelSpec, load_classifier, read_spec
from model_store.architecture import from_spec
from model_store.checkpoint import CheckpointError, read_checkpoint
from model_store.evaluation import verdict
from model_store.imaging import preprocess_batch
from model_store.inference import softmax
from model_store.registry import SHIPPED_WEIGHTS, RegistrationError, embedded_default, load_network, register
from model_store.store import SPEC_FILE, WEIGHTS_FILE

REPO = Path(__file__).resolve().parents[1]


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
    source = from_spec(ModelSpec()).eval()
    path = tmp_path / "older.pth"
    torch.save(source.state_dict(), path)
    model = register(read_checkpoint(path), name="older")
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
    assert meta["torch_version"] == str(torch.__version__)
    assert meta["bentoml_version"] == bentoml.__version__
    assert model.info.labels == {"stage": "test"}
    assert read_spec(model) == ModelSpec()
    # Weights are safetensors (no pickle anywhere in the stored model).
    files = {p.name for p in Path(model.path).iterdir()}
    assert {WEIGHTS_FILE, SPEC_FILE} <= files
    assert not any(f.endswith((".pt", ".pth", ".pkl")) for f in files)
    assert Path(model.path_of(WEIGHTS_FILE)).read_bytes()[8:9] == b"{"  # safetensors JSON header


def test_embedded_default_is_the_shipped_model_and_scores_what_its_header_says(exact_images):
    checkpoint = embedded_default()
    assert checkpoint.sha256 == hashlib.sha256(SHIPPED_WEIGHTS.read_bytes()).hexdigest()
    assert 6.5e6 < SHIPPED_WEIGHTS.stat().st_size < 7.5e6  # fp32, about 7 MB
    module = from_spec(ModelSpec()).eval()
    module.load_state_dict(checkpoint.state_dict)
    images, labels = exact_images
    batch = preprocess_batch([Image.fromarray(i) for i in images], ModelSpec())
    with torch.inference_mode():
        predicted = torch.cat(
            [module(torch.from_numpy(batch[i : i + 256])).argmax(1) for i in range(0, len(batch), 256)]
        )
    top1 = float((predicted.numpy() == labels).mean() * 100)
    assert abs(top1 - float(checkpoint.metadata["test_top1_exact"])) < 0.05  # recomputed here, not copied


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
    bad.state_dict["fc_out.bias"] = torch.full((10,), float("nan"))
    with pytest.raises(RegistrationError, match="non-finite"):
        register(bad, name="never-written")
    assert stored_tags() == before


def run_save_model(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / "save_model.py"), *args],
        capture_output=True,
        text=True,
        env=os.environ,
        timeout=300,
    )


def test_save_model_script_registers_a_checkpoint(tmp_path):
    path = tmp_path / "best_pyramidnet_model.pth"
    torch.save({"model_state_dict": embedded_default().state_dict, "epoch": 9, "best_val_acc": 91.0}, path)
    result = run_save_model("--checkpoint", str(path), "--name", "scripted", "--label", "owner=ml")
    assert result.returncode == 0, result.stderr
    tag = result.stdout.splitlines()[0]
    assert tag.startswith("scripted:")
    assert "1,772,706" in result.stdout
    assert "91.0" in result.stdout
    model = bentoml.models.get(tag)
    assert model.info.labels == {"owner": "ml"}
    # Its own claim is recorded, not vouched for: nothing was measured.
    assert backed(model.info.metadata) is None
    assert "trained     unknown" in result.stdout
    assert "--eval-images" in result.stdout


def test_save_model_measures_top1_on_labelled_images_when_asked(tmp_path, test_jpegs):
    folder = tmp_path / "labelled"
    for class_dir in test_jpegs.iterdir():
        (folder / class_dir.name).mkdir(parents=True)
        for image in sorted(class_dir.glob("*.jpg"))[:10]:
            (folder / class_dir.name / image.name).symlink_to(image)
    path = tmp_path / "fresh.pth"  # a freshly initialised network: what "trained": true once hid
    torch.manual_seed(11)
    torch.save({"model_state_dict": from_spec(ModelSpec()).state_dict(), "best_val_acc": 97.0}, path)
    result = run_save_model("--checkpoint", str(path), "--name", "measured", "--eval-images", str(folder))
    assert result.returncode == 0, result.stderr
    meta = bentoml.models.get(result.stdout.splitlines()[0]).info.metadata
    assert meta["measured_images"] == 100
    assert meta["measured_top1"] < 20
    assert backed(meta) is False
    assert "no better than chance" in result.stdout
    assert "97.0" in result.stdout


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


def test_save_model_script_defaults_to_the_embedded_model():
    result = run_save_model("--name", "embedded")
    assert result.returncode == 0, result.stderr
    assert f"source      embedded:{SHIPPED_WEIGHTS.name}" in result.stdout
    assert "measured    top-1" in result.stdout
    assert "10000 images" in result.stdout
    assert "trained     true" in result.stdout
    assert "WARNING" not in result.stdout
    assert backed(bentoml.models.get(result.stdout.splitlines()[0]).info.metadata) is True


def test_save_model_script_ends_quietly_when_its_reader_leaves_early():
    # `save_model.py | head -n1` with a reader that is gone before the tag is printed.
    with subprocess.Popen(
        [sys.executable, str(REPO / "scripts" / "save_model.py"), "--name", "early-reader"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ,
    ) as proc:
        proc.stdout.close()
        stderr = proc.stderr.read()
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr, stderr
    assert bentoml.models.get("early-reader:latest").info.metadata["source"].startswith("embedded:")  # registered


@pytest.mark.parametrize("content", [b"", b"not a checkpoint", b"PK\x03\x04truncated"])
def test_save_model_script_refuses_bad_input_with_one_line(tmp_path, content):
    path = tmp_path / "bad.pth"
    path.write_bytes(content)
    before = stored_tags()
    result = run_save_model("--checkpoint", str(path), "--name", "refused")
    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1
    assert "error" in result.stderr
    assert stored_tags() == before


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
    loaded = load_network(model)
    for key, value in trained.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)


def test_without_its_weights_the_default_refuses_plainly(tmp_path):
    with pytest.raises(RegistrationError, match="weights are missing"):
        embedded_default(shipped=tmp_path / "absent.safetensors")


def test_registering_the_same_weights_again_returns_the_stored_model(tmp_path):
    path = tmp_path / "best_pyramidnet_model.pth"
    torch.save({"model_state_dict": embedded_default().state_dict, "epoch": 3}, path)
    first = register(read_checkpoint(path), name="twice")
    second = register(read_checkpoint(path), name="twice")
    assert first.tag == second.tag
    assert first.tag.version == read_checkpoint(path).sha256[:16]
    assert [str(m.tag) for m in bentoml.models.list("twice")] == [str(first.tag)]


def make(*args: str, **env: str) -> str:
    result = subprocess.run(
        ["make", "-n", *args], cwd=REPO, capture_output=True, text=True, timeout=60, env={**os.environ, **env}
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_make_serve_installs_only_what_serving_needs(tmp_path):
    steps = make("serve", f"VENV={tmp_path / 'venv'}")
    assert "pip install -e .\n" in steps
    assert "[dev]" not in steps
    assert "[dev]" in make("test", f"VENV={tmp_path / 'venv'}")


def test_make_serve_has_one_model_knob():
    assert 'tag="team-model:v3"' in make("serve", "MODEL=team-model:v3")
    assert 'tag="team-model:v4"' in make("serve", PYRAMIDNET_MODEL="team-model:v4")
    assert 'tag=""' in make("serve", PYRAMIDNET_MODEL="")  # unset: the embedded default, pinned by its weights
