"""Quantization-aware training of an int8 model (scripts/quantize_aware.py) in pieces, then shipped with its
weights (ship_weights.py --int8)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import openvino
import pytest

from model_store.openvino_ir import Int8Accuracy
from model_store.registry import SHIPPED_WEIGHTS, embedded_default, int8_belongs_to

from ..scripts import script

# Two images per class held out of the first three: one trains, both calibrate (NNCF's minimum is one).
QAT = ["--batch-size", "4", "--eval-every", "2", "--holdout-per-class", "1", "--limit-per-class", "3"]


@pytest.fixture(scope="module")
def quick_weights(quick_run: Path) -> Path:
    """The session's quick run (a PyramidNet of one block per stage, two epochs): QAT is the same at any depth."""
    return quick_run / "model.pth"


def qat(training_data: Path, run: Path, weights: Path, *extra: str) -> str:
    """One quantize_aware.py piece; its log."""
    done = script(
        "quantize_aware.py",
        *("--data", str(training_data), "--run", str(run), "--weights", str(weights), *QAT, *extra),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stderr


QUICK_QAT = ["--steps", "3", "--blocks-per-stage", "1"]


def test_qat_in_pieces_is_step_for_step_qat_in_one(training_data, quick_weights, tmp_path):
    qat(training_data, tmp_path / "whole", quick_weights, *QUICK_QAT)
    first = qat(training_data, tmp_path / "pieces", quick_weights, *QUICK_QAT, "--time-limit-min", "0")
    assert "piece ended (time limit 0 min) at step 1 of 3" in first
    rest = qat(training_data, tmp_path / "pieces", quick_weights, *QUICK_QAT, "--resume")  # evaluates at step 2
    assert "resumed at step 1 of 3" in rest

    whole, pieces = tmp_path / "whole", tmp_path / "pieces"
    for name in ("int8.xml", "int8.bin"):  # the same model, byte for byte, whichever process saved it
        assert (whole / name).read_bytes() == (pieces / name).read_bytes(), name
    history = [json.loads(line) for line in (whole / "history.jsonl").read_text().splitlines()]
    assert [h["step"] for h in history] == [0, 2, 3]  # before training, every --eval-every steps, the last
    resumed = [json.loads(line) for line in (pieces / "history.jsonl").read_text().splitlines()]
    timeless = [[{k: v for k, v in h.items() if k != "images_per_s"} for h in hs] for hs in (history, resumed)]
    assert timeless[0] == timeless[1]
    for h in history:  # image by image against fp32 on the 10 held-out images
        assert h["losses"] - h["gains"] == round((h["fp32_top1"] - h["int8_top1"]) * 10 / 100)
        assert 0 <= h["agreement"] <= 100
    summary = json.loads((whole / "summary.json").read_text())
    assert summary["recipe"]["steps"] == 3
    assert summary["command"].startswith("python scripts/quantize_aware.py --data")
    graph = openvino.Core().read_model(whole / "int8.xml")
    assert graph.get_rt_info(["pyramidnet", "weights_sha256"]).astype(str) == summary["recipe"]["weights"]
    assert [i.get_any_name() for i in graph.inputs] == ["images"]
    assert [o.get_any_name() for o in graph.outputs] == ["logits"]
    assert any(op.get_type_name() == "FakeQuantize" for op in graph.get_ops())

    other = script(
        "quantize_aware.py",
        *("--data", str(training_data), "--run", str(pieces), "--weights", str(quick_weights)),
        *(*QAT, "--steps", "4", "--blocks-per-stage", "1", "--resume"),  # another recipe
    )
    assert other.returncode != 0
    assert "was trained with" in other.stderr
    again = script(
        "quantize_aware.py",
        *("--data", str(training_data), "--run", str(pieces), "--weights", str(quick_weights), *QAT, *QUICK_QAT),
    )
    assert again.returncode != 0
    assert "pass --resume" in again.stderr
    # ship_weights.py --int8 ships only an int8 model of the weights it ships with, before writing anything.
    shipped = tmp_path / "w.safetensors"
    shutil.copy(SHIPPED_WEIGHTS, shipped)
    refused = script(
        "ship_weights.py", "--data", str(training_data), "--out", str(shipped), "--int8", str(whole / "int8.xml")
    )
    assert refused.returncode != 0
    assert "was not made from" in refused.stderr
    assert not (tmp_path / "w-int8.xml").exists()


def test_ship_weights_ships_the_qat_model_of_the_shipped_weights_measured_on_the_hold_out(training_data, tmp_path):
    weights = tmp_path / "w.safetensors"
    shutil.copy(SHIPPED_WEIGHTS, weights)
    qat(training_data, tmp_path / "qat", weights, "--steps", "1")  # PyramidNet-110, as shipped
    data = tmp_path / "data"  # the training images, and 10 test JPEGs per class for the report
    (data / "test").mkdir(parents=True)
    (data / "train").symlink_to(training_data / "train")
    for folder in (training_data / "test").iterdir():
        (data / "test" / folder.name).mkdir()
        for jpeg in sorted(folder.glob("*.jpg"))[:10]:
            (data / "test" / folder.name / jpeg.name).symlink_to(jpeg)
    shipped = script(
        "ship_weights.py",
        *("--data", str(data), "--out", str(weights), "--int8", str(tmp_path / "qat" / "int8.xml")),
        "--holdout-per-class",
        "1",
    )
    assert shipped.returncode == 0, shipped.stderr[-3000:]
    default = embedded_default(shipped=weights)
    assert default.int8_ir == tmp_path / "w-int8.xml"
    assert int8_belongs_to(default.int8_ir, default)
    graph = openvino.Core().read_model(default.int8_ir)
    assert "quantization-aware training" in graph.get_rt_info(["pyramidnet", "calibrated_on"]).astype(str)
    accuracy = Int8Accuracy.recorded(graph)
    assert (accuracy.images, accuracy.on) == (10, "held-out training images")
    assert "test top-1" in shipped.stdout  # reported, never chosen by
    assert "on the 100 JPEGs" in shipped.stdout
