"""Training and evaluation scripts, on the CPU with a handful of real CIFAR-10 images."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from model_store import CIFAR10_CLASSES, ModelSpec
from model_store.checkpoint import read_checkpoint
from model_store.openvino_ir import native_bf16
from model_store.registry import embedded_default, register

from .conftest import CIFAR10

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
import train  # noqa: E402
from evaluate import CARD_BEGIN, CARD_END  # noqa: E402
from ship_weights import jpeg_copies  # noqa: E402


def script(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / name), *args], capture_output=True, text=True, timeout=900
    )


@pytest.fixture(scope="module")
def data(cifar10_dir, test_jpegs, tmp_path_factory) -> Path:
    """train/ (the first 3 training images of each class) and test/ (all 10,000 test images)."""
    root = tmp_path_factory.mktemp("cifar-train")
    with tarfile.open(cifar10_dir / "train-jpeg.tar.gz") as tar:
        wanted = [
            m for m in tar.getmembers() if m.isfile() and Path(m.name).name in {"0000.jpg", "0001.jpg", "0002.jpg"}
        ]
        tar.extractall(root, members=wanted, filter="data")
    (root / "test").symlink_to(test_jpegs)
    return root


def test_augmentation_crops_with_zero_padding_and_flips():
    x = torch.arange(2 * 3 * 32 * 32, dtype=torch.float32).reshape(2, 3, 32, 32) + 1
    out = train.augment(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    for original, cropped in zip(x, out, strict=True):
        padded = torch.nn.functional.pad(original, (4, 4, 4, 4))
        windows = [padded[:, dy : dy + 32, dx : dx + 32] for dy in range(9) for dx in range(9)]
        assert any(torch.equal(cropped, w) or torch.equal(cropped, w.flip(2)) for w in windows)


def test_cutout_blanks_one_square_per_image_clipped_at_the_border():
    x = torch.ones(64, 3, 32, 32)
    out = train.cut_out(x, 16, torch.Generator().manual_seed(0))
    for image in out:
        hole = image == 0
        assert torch.equal(hole[0], hole[1])
        assert torch.equal(hole[0], hole[2])
        rows, cols = hole[0].any(1).nonzero().flatten(), hole[0].any(0).nonzero().flatten()
        assert 8 <= len(rows) <= 16
        assert 8 <= len(cols) <= 16
        assert torch.equal(rows, torch.arange(rows[0], rows[-1] + 1))  # contiguous
        assert torch.equal(cols, torch.arange(cols[0], cols[-1] + 1))
        assert hole[0].sum() == len(rows) * len(cols)  # a rectangle, nothing else touched
        assert torch.equal(image[~hole], x[0][~hole])
    assert len({tuple((image[0] == 0).nonzero()[0].tolist()) for image in out}) > 1  # the squares move


def test_normalisation_matches_the_serving_preprocessing(exact_images):
    from model_store.imaging import normalize as serving_normalize

    images = exact_images[0][:8]
    ours = train.normalize(torch.from_numpy(images).permute(0, 3, 1, 2), ModelSpec()).numpy()
    assert np.array_equal(ours, serving_normalize(images, ModelSpec()))


def test_schedule_warms_up_then_decays_linearly_to_zero_at_the_last_step():
    lrs = [train.lr_at(s, 100, 10, 0.1) for s in range(101)]
    assert lrs[0] == pytest.approx(0.01)
    assert lrs[9] == pytest.approx(0.1)
    assert lrs[10] == pytest.approx(0.1)
    assert lrs[55] == pytest.approx(0.05)
    assert lrs[100] == 0
    assert all(a > b for a, b in itertools.pairwise(lrs[10:]))


def test_weight_decay_only_on_conv_and_linear_weights():
    model = train.build_model(ModelSpec())
    decayed, free = train.build_optimizer(model, RECIPE).param_groups
    layers = dict(model.named_modules())
    names = {id(p): n for n, p in model.named_parameters()}
    for p in decayed["params"]:
        assert isinstance(layers[names[id(p)].rsplit(".", 1)[0]], torch.nn.Conv2d | torch.nn.Linear)
        assert names[id(p)].endswith(".weight")
    assert decayed["weight_decay"] == RECIPE.weight_decay
    assert free["weight_decay"] == 0
    assert {names[id(p)].rsplit(".", 1)[1] for p in free["params"]} == {"weight", "bias"}  # BN and fc bias
    assert len(decayed["params"]) + len(free["params"]) == len(list(model.parameters()))


def test_every_residual_block_starts_as_the_identity():
    model = train.build_model(ModelSpec()).eval()
    block = model.layer2[3]
    x = torch.randn(2, block.bn1.num_features, 16, 16)
    with torch.no_grad():
        assert torch.equal(block(x), block.down_sample(x))


def test_holdout_is_stratified_disjoint_and_fixed_by_the_seed():
    labels = np.repeat(np.arange(10), 50)
    train_idx, holdout = train.split_holdout(labels, 5, seed=0)
    assert np.bincount(labels[holdout]).tolist() == [5] * 10
    assert not set(train_idx) & set(holdout)
    assert len(train_idx) + len(holdout) == len(labels)
    assert np.array_equal(holdout, train.split_holdout(labels, 5, seed=0)[1])
    assert not np.array_equal(holdout, train.split_holdout(labels, 5, seed=1)[1])


RECIPE = train.Recipe(
    epochs=2,
    batch_size=8,
    lr=0.1,
    warmup_epochs=1,
    weight_decay=5e-4,
    label_smoothing=0.1,
    ema_decay=0.9,
    holdout_per_class=1,
    limit_per_class=3,
    precision="bf16",
    seed=0,
)
SMALL_RUN = [
    "--epochs",
    "2",
    "--batch-size",
    "8",
    "--warmup-epochs",
    "1",
    "--ema-decay",
    "0.9",
    "--holdout-per-class",
    "1",
    "--limit-per-class",
    "3",
    "--test-every",
    "1",
    "--cutout",
    "16",
]


def test_the_exact_images_are_found_among_the_test_jpegs(data, exact_images):
    images, labels = exact_images
    jpegs, jpeg_labels = train.read_split(data, "test")
    copies = jpeg_copies(labels, jpeg_labels)
    assert (jpeg_labels[copies] == labels).all()
    error = np.abs(jpegs[copies].astype(np.int16) - images).mean(axis=(1, 2, 3))
    assert error.max() < 20
    assert 4 < error.mean() < 8
    assert np.abs(jpegs[copies + 1].astype(np.int16) - images).mean() > 30


def test_a_run_in_pieces_is_step_for_step_the_run_in_one(data, tmp_path):
    whole = script("train.py", "--data", str(data), "--run", str(tmp_path / "whole"), *SMALL_RUN)
    assert whole.returncode == 0, whole.stderr[-3000:]

    pieces = tmp_path / "pieces"
    first = script("train.py", "--data", str(data), "--run", str(pieces), *SMALL_RUN, "--time-limit-min", "0")
    assert first.returncode == 0, first.stderr
    assert "piece ended (time limit 0 min) at step 1 of 6" in first.stderr, first.stderr
    for _ in range(6):  # each piece ends after one step: mid-epoch and at the epoch's end
        if (pieces / "model.pth").exists():
            break
        piece = script(
            "train.py", "--data", str(data), "--run", str(pieces), *SMALL_RUN, "--time-limit-min", "0", "--resume"
        )
        assert piece.returncode == 0, piece.stderr[-3000:]

    a, b = torch.load(tmp_path / "whole" / "model.pth"), torch.load(pieces / "model.pth")
    assert a.keys() == b.keys()
    assert a["best_val_acc"] == b["best_val_acc"]
    for key, value in a["model_state_dict"].items():
        assert torch.equal(value, b["model_state_dict"][key]), key
    history = [json.loads(line) for line in (tmp_path / "whole" / "history.jsonl").read_text().splitlines()]
    resumed = [json.loads(line) for line in (pieces / "history.jsonl").read_text().splitlines()]
    same = (
        "epoch",
        "step",
        "lr",
        "loss",
        "train_top1",
        "holdout_top1",
        "holdout_top1_ema",
        "test_top1",
        "test_top1_ema",
    )
    assert [[h[k] for k in same] for h in history] == [[h[k] for k in same] for h in resumed]


def test_precision_auto_is_bf16_only_where_the_cpu_computes_it_natively(monkeypatch):
    for native, expected in ((True, "bf16"), (False, "fp32")):
        monkeypatch.setattr(train, "native_bf16", lambda native=native: native)
        assert train.choose_precision("auto") == expected
        assert train.choose_precision("auto", resumed="bf16") == "bf16"  # a resumed run keeps its own
        assert train.choose_precision("auto", resumed="fp32") == "fp32"
        assert train.choose_precision("fp32", resumed="bf16") == "fp32"  # as asked; the recipe check then refuses


def test_a_resume_on_auto_continues_in_the_precision_the_run_began_with(data, tmp_path):
    run, other = tmp_path / "run", "fp32" if native_bf16() else "bf16"  # not what auto picks on this CPU
    first = script(
        "train.py", "--data", str(data), "--run", str(run), *SMALL_RUN, "--precision", other, "--time-limit-min", "0"
    )
    assert first.returncode == 0, first.stderr[-3000:]
    resumed = script("train.py", "--data", str(data), "--run", str(run), *SMALL_RUN, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"precision: {other} " in resumed.stderr
    assert json.loads((run / "summary.json").read_text())["recipe"]["precision"] == other


def test_a_resume_with_another_recipe_is_refused(data, tmp_path):
    run = tmp_path / "run"
    assert (
        script("train.py", "--data", str(data), "--run", str(run), *SMALL_RUN, "--time-limit-min", "0").returncode == 0
    )
    other = script("train.py", "--data", str(data), "--run", str(run), *SMALL_RUN, "--lr", "0.2", "--resume")
    assert other.returncode != 0
    assert "was trained with" in other.stderr
    again = script("train.py", "--data", str(data), "--run", str(run), *SMALL_RUN)
    assert again.returncode != 0
    assert "pass --resume" in again.stderr
    nothing = script("train.py", "--data", str(data), "--run", str(tmp_path / "none"), *SMALL_RUN, "--resume")
    assert nothing.returncode != 0
    assert "there is nothing to resume" in nothing.stderr


def test_train_register_and_evaluate(data, tmp_path, server):
    run = tmp_path / "run"
    trained = script("train.py", "--data", str(data), "--run", str(run), *SMALL_RUN)
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
    shipped = script(
        "ship_weights.py", "--run", str(run), "--data", str(CIFAR10), "--out", str(tmp_path / "w.safetensors")
    )
    assert shipped.returncode == 0, shipped.stderr[-3000:]
    facts = embedded_default(shipped=tmp_path / "w.safetensors").metadata
    assert 0 <= facts["measured_top1"] <= 100
    assert facts["measured_images"] == 10_000
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
        str(data / "test"),
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


def test_evaluate_offline_and_through_the_service_agree(server, default_model, data, tmp_path):
    reports = tmp_path / "reports"
    result = script(
        "evaluate.py",
        "--images",
        str(data / "test"),
        "--model",
        str(default_model.tag),
        "--limit-per-class",
        "6",
        "--url",
        server.url,
        "--out-dir",
        str(reports),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((reports / "report.json").read_text())
    assert report["service"]["top1"] == report["top1"]
    assert report["service"]["top1_agreement"] == 100.0
    assert report["service"]["max_abs_probability_difference"] < 1e-5
