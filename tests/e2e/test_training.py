"""Training in pieces, resumed step for step, then registered and evaluated: the scripts end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import openvino
import pytest
import torch
from evaluate import CARD_BEGIN, CARD_END

from model_store import CIFAR10_CLASSES
from model_store.openvino_ir import Int8Accuracy, native_bf16
from model_store.pth import read_checkpoint
from model_store.registry import embedded_default, int8_belongs_to, register

from ..scripts import script
from .recipes import QUICK_RUN, SMALL_RUN

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def exact_jpegs(cifar10_dir, test_jpegs, tmp_path_factory) -> Path:
    """A data folder of the 1,017 pixel-exact test images and their JPEG copies alone (test/<class>/ from
    0000.jpg on, as many as that class has among them): what ship_weights measures, in a quarter of the time."""
    root = tmp_path_factory.mktemp("exact-jpegs")
    (root / "test-exact-first1017.npz").symlink_to(cifar10_dir / "test-exact-first1017.npz")
    labels = np.load(cifar10_dir / "test-exact-first1017.npz")["labels"]
    for label, name in enumerate(CIFAR10_CLASSES):
        (root / "test" / name).mkdir(parents=True)
        for k in range(int((labels == label).sum())):
            (root / "test" / name / f"{k:04d}.jpg").symlink_to(test_jpegs / name / f"{k:04d}.jpg")
    return root


@pytest.fixture(scope="module")
def continuation(training_data, quick_run, tmp_path_factory) -> list[str]:
    """A continuation's options (a SWA and distillation recipe) from the finished quick run: its weights, and a
    teacher cached from them."""
    teacher = tmp_path_factory.mktemp("teacher") / "teacher.npz"
    cached = script(
        "teacher.py",
        *("--data", str(training_data), "--out", str(teacher), "--weights", str(quick_run / "model.pth")),
        *("--holdout-per-class", "1", "--limit-per-class", "3", "--blocks-per-stage", "1"),
    )
    assert cached.returncode == 0, cached.stderr[-3000:]
    with np.load(teacher) as cache:
        assert cache["probabilities"].shape == (30, 10)
        assert np.allclose(cache["probabilities"].sum(1), 1, atol=1e-5)
        assert f"hold-out top-1  {float(cache['holdout_top1']):.2f} % on 10 held-out" in cached.stdout
    recipe = ["--init", str(quick_run / "model.pth"), "--schedule", "constant", "--lr", "0.02", "--swa"]
    return [*recipe, "--teacher", str(teacher), "--distill", "0.5"]


@pytest.mark.parametrize("kind", ["fresh", "continuation"])
def test_a_run_in_pieces_is_step_for_step_the_run_in_one(training_data, quick_run, tmp_path, request, kind):
    if kind == "fresh":  # the session's quick run is this recipe in one piece
        recipe, whole = QUICK_RUN, quick_run
    else:
        recipe, whole = [*QUICK_RUN, *request.getfixturevalue("continuation")], tmp_path / "whole"
        done = script("train.py", "--data", str(training_data), "--run", str(whole), *recipe)
        assert done.returncode == 0, done.stderr[-3000:]

    pieces = tmp_path / "pieces"
    # The pieces name their device, the run in one was left to choose it (auto): the device is the piece's, not
    # the recipe's, and the images and their augmentation are tensors on it, as on a GPU.
    recipe = [*recipe, "--device", "cpu"]
    first = script("train.py", "--data", str(training_data), "--run", str(pieces), *recipe, "--time-limit-min", "0")
    assert first.returncode == 0, first.stderr
    assert "piece ended (time limit 0 min) at step 1 of 4" in first.stderr, first.stderr
    for _ in range(4):  # each piece ends after one step: mid-epoch and at the epoch's end
        if (pieces / "model.pth").exists():
            break
        piece = script(
            "train.py",
            "--data",
            str(training_data),
            "--run",
            str(pieces),
            *recipe,
            "--time-limit-min",
            "0",
            "--resume",
        )
        assert piece.returncode == 0, piece.stderr[-3000:]

    a, b = torch.load(whole / "model.pth"), torch.load(pieces / "model.pth")
    assert a.keys() == b.keys()
    assert a["best_val_acc"] == b["best_val_acc"]
    for key, value in a["model_state_dict"].items():
        assert torch.equal(value, b["model_state_dict"][key]), key
    history = [json.loads(line) for line in (whole / "history.jsonl").read_text().splitlines()]
    resumed = [json.loads(line) for line in (pieces / "history.jsonl").read_text().splitlines()]
    same = [
        "epoch",
        "step",
        "lr",
        "loss",
        "train_top1",
        "holdout_top1",
        "holdout_top1_ema",
        "test_top1",
        "test_top1_ema",
    ]
    if kind == "continuation":  # the averaged weights are evaluated at every epoch's end, on the hold-out and test
        same += ["holdout_top1_swa", "test_top1_swa"]
        assert {h["lr"] for h in history} == {0.02}
        summary = json.loads((whole / "summary.json").read_text())
        best = max(history[-1][f"holdout_top1{s}"] for s in ("", "_ema", "_swa"))
        assert summary["holdout_top1"] == best == a["best_val_acc"]
        assert summary["recipe"]["swa"] is True
        assert summary["recipe"]["distill"] == 0.5
        assert len(summary["recipe"]["init"]) == len(summary["recipe"]["teacher"]) == 64  # sha256 of each
    assert [[h[k] for k in same] for h in history] == [[h[k] for k in same] for h in resumed]


def test_a_compiled_run_trains_as_the_eager_one(training_data, tmp_path):
    """`--compile` (torch.compile of the network for the training steps, what a GPU run may take) on the CPU, in fp32:
    the same steps as eager, within float rounding."""
    runs = {}
    for name, extra in (("eager", []), ("compiled", ["--compile"])):
        runs[name] = tmp_path / name
        recipe = [*QUICK_RUN, "--precision", "fp32", *extra]
        done = script("train.py", "--data", str(training_data), "--run", str(runs[name]), *recipe)
        assert done.returncode == 0, done.stderr[-3000:]
    eager, compiled = (
        [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()] for run in runs.values()
    )
    assert [h["step"] for h in compiled] == [h["step"] for h in eager] == [2, 4]
    for a, b in zip(eager, compiled, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4)
        assert b["train_top1"] == a["train_top1"]
    expected = torch.load(runs["eager"] / "model.pth")["model_state_dict"]
    for key, value in torch.load(runs["compiled"] / "model.pth")["model_state_dict"].items():
        assert value.is_contiguous()
        assert torch.allclose(value, expected[key], rtol=1e-3, atol=1e-4), key


def test_a_resume_on_auto_continues_in_the_precision_the_run_began_with(training_data, tmp_path):
    run, other = tmp_path / "run", "fp32" if native_bf16() else "bf16"  # not what auto picks on this CPU
    first = script(
        "train.py",
        "--data",
        str(training_data),
        "--run",
        str(run),
        *QUICK_RUN,
        "--precision",
        other,
        "--time-limit-min",
        "0",
    )
    assert first.returncode == 0, first.stderr[-3000:]
    # One step more is enough to see it (bf16 where the CPU lacks it is emulated, and slow).
    one_more = ["--resume", "--time-limit-min", "0"]
    resumed = script("train.py", "--data", str(training_data), "--run", str(run), *QUICK_RUN, *one_more)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"precision: {other} " in resumed.stderr
    assert "piece ended (time limit 0 min) after epoch 1" in resumed.stderr, resumed.stderr  # step 2 of 4


def test_cuda_asked_for_where_there_is_none_is_refused_in_one_line(training_data, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    done = script(
        "train.py", "--data", str(training_data), "--run", str(tmp_path / "run"), *QUICK_RUN, "--device", "cuda"
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"train: error: device 'cuda': torch {torch.__version__} sees no CUDA GPU here"
    ]
    assert not (tmp_path / "run").exists()  # nothing started


def test_a_resume_with_another_recipe_is_refused(training_data, tmp_path):
    run = tmp_path / "run"
    assert (
        script(
            "train.py", "--data", str(training_data), "--run", str(run), *QUICK_RUN, "--time-limit-min", "0"
        ).returncode
        == 0
    )
    other = script("train.py", "--data", str(training_data), "--run", str(run), *QUICK_RUN, "--lr", "0.2", "--resume")
    assert other.returncode != 0
    assert "was trained with" in other.stderr
    again = script("train.py", "--data", str(training_data), "--run", str(run), *QUICK_RUN)
    assert again.returncode != 0
    assert "pass --resume" in again.stderr
    nothing = script("train.py", "--data", str(training_data), "--run", str(tmp_path / "none"), *QUICK_RUN, "--resume")
    assert nothing.returncode != 0
    assert "there is nothing to resume" in nothing.stderr


def test_train_register_and_evaluate(training_data, exact_jpegs, tmp_path, server):
    run = tmp_path / "run"
    trained = script("train.py", "--data", str(training_data), "--run", str(run), *SMALL_RUN)
    assert trained.returncode == 0, trained.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["epochs"] == 2
    assert summary["weights"] in ("final", "ema")
    assert summary["train_images"] == 20
    assert summary["command"].startswith("python scripts/train.py --data")
    assert summary["images_per_s_fastest_epoch"] >= summary["images_per_s"] > 0  # the run's rate includes any pauses

    checkpoint = read_checkpoint(run / "model.pth")  # the seed's format, read safely
    assert checkpoint.epoch == 2
    assert checkpoint.best_val_acc == summary["holdout_top1"]
    data = tmp_path / "data"  # the exact test images, and the run's training images for its int8 model
    data.mkdir()
    for name in ("test", "test-exact-first1017.npz"):
        (data / name).symlink_to(exact_jpegs / name)
    (data / "train").symlink_to(training_data / "train")
    shipped = script(
        "ship_weights.py", "--run", str(run), "--data", str(data), "--out", str(tmp_path / "w.safetensors")
    )
    assert shipped.returncode == 0, shipped.stderr[-3000:]
    before = (tmp_path / "w.safetensors").read_bytes()
    again = script("ship_weights.py", "--run", str(run), "--data", str(data), "--out", str(tmp_path / "w.safetensors"))
    assert again.returncode == 1  # the same weights over themselves: no gain shown on the hold-out
    assert "0 gained, 0 lost" in again.stdout, again.stdout
    assert "not measurably better" in again.stderr
    assert (tmp_path / "w.safetensors").read_bytes() == before
    default = embedded_default(shipped=tmp_path / "w.safetensors")
    assert default.int8_ir == tmp_path / "w-int8.xml"
    assert int8_belongs_to(default.int8_ir, default)
    int8 = Int8Accuracy.recorded(openvino.Core().read_model(default.int8_ir))
    assert (int8.images, int8.on) == (10, "held-out training images")  # the run's hold-out: 1 image per class
    assert int8.losses - int8.gains == round((int8.fp32_top1 - int8.int8_top1) * int8.images / 100)
    assert "held-out" in shipped.stdout
    facts = default.metadata
    assert 0 <= facts["measured_top1"] <= 100
    assert facts["measured_images"] == 1017
    assert 0 <= float(facts["test_top1_exact"]) <= 100
    assert 0 <= float(facts["test_top1_exact_as_jpeg"]) <= 100
    assert facts["epochs"] == "2"
    assert facts["training_command"] == summary["command"]
    assert facts["train_images_per_s"] == (
        f"{summary['images_per_s_fastest_epoch']} in the fastest epoch, {summary['images_per_s']} over the run"
    )
    assert facts["data"] == "CIFAR-10 training JPEGs: 20 images (1 per class held out), 40 seen over 2 epochs"
    shipped_model = register(embedded_default(shipped=tmp_path / "w.safetensors"), name="trained-on-cpu")

    reports, readme = tmp_path / "docs" / "model-card", tmp_path / "README.md"
    readme.write_text(f"# Title\n\nabove\n{CARD_BEGIN}\nan old card\n{CARD_END}\nbelow\n")
    # What `python -m bench.precisions --out` writes (two of its precisions; figures made up for the card's layout).
    row = {
        "images": 10_000,
        "agreement_with_fp32": 100.0,
        "max_abs_dp_vs_fp32": 0.0,
        "offline_images_per_s": 160.2,
        "served_images_per_s": 92.6,
        "served_p99_ms": 567.8,
    }
    record = {"precisions": {"fp32": {**row, "top1": 84.14}, "bf16": {**row, "top1": 84.21}}, "default_by_rule": "bf16"}
    (tmp_path / "precisions.json").write_text(json.dumps(record))
    evaluated = script(
        "evaluate.py",
        "--images",
        str(training_data / "test"),
        "--model",
        str(shipped_model.tag),
        "--limit-per-class",
        "4",
        "--out-dir",
        str(reports),
        "--card",
        str(readme),
        "--precisions",
        str(tmp_path / "precisions.json"),
    )
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    report = json.loads((reports / "report.json").read_text())
    assert report["images"] == 40
    assert set(report["per_class"]) == set(CIFAR10_CLASSES)
    assert np.array(report["confusion"]).sum() == 40
    assert (reports / "confusion.png").stat().st_size > 10_000
    assert (reports / "reliability.png").stat().st_size > 10_000
    page = readme.read_text()
    assert page.startswith("# Title\n\nabove\n")
    assert page.endswith(f"{CARD_END}\nbelow\n")
    assert "old card" not in page
    assert f"| top-1, offline (%) | **{report['top1']:.2f}** ({report['runs_as']}) |" in page
    assert report["runs_as"] == f"openvino {'bf16' if native_bf16() else 'fp32'} on cpu"
    assert "the default is the fastest served precision within 0.1 pp of fp32's top-1: **bf16**" in page
    assert "| bf16 | 84.21 | 100.00 | 0 | 160 | 93 | 568 |" in page
    assert f"| training command | {summary['command']} |" in page
    assert "| epochs | 2 |" in page
    assert f"| final weights or their EMA (by hold-out top-1) | {summary['weights']} |" in page
    assert all(f"| {c} | {report['per_class'][c]:.2f} |" in page for c in CIFAR10_CLASSES)
    assert "](docs/model-card/confusion.png)" in page
    assert "](docs/model-card/reliability.png)" in page
