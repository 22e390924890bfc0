"""The training recipe's parts in-process: augmentation, schedule, weight decay, hold-out, precision."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from model_store import ModelSpec
from model_store.training import run as train
from model_store.training.data import split_holdout


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


def test_a_constant_schedule_holds_the_rate_from_the_first_step_to_the_last():
    assert {train.lr_at(s, 100, 10, 0.015, "constant") for s in range(101)} == {0.015}


def test_weight_decay_only_on_conv_and_linear_weights():
    model = train.build_model(ModelSpec(num_layers=2))  # every kind of layer, at any depth
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
    train_idx, holdout = split_holdout(labels, 5, seed=0)
    assert np.bincount(labels[holdout]).tolist() == [5] * 10
    assert not set(train_idx) & set(holdout)
    assert len(train_idx) + len(holdout) == len(labels)
    assert np.array_equal(holdout, split_holdout(labels, 5, seed=0)[1])
    assert not np.array_equal(holdout, split_holdout(labels, 5, seed=1)[1])


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


def test_precision_auto_is_bf16_only_where_the_cpu_computes_it_natively(monkeypatch):
    for native, expected in ((True, "bf16"), (False, "fp32")):
        monkeypatch.setattr(train, "native_bf16", lambda native=native: native)
        assert train.choose_precision("auto") == expected
        assert train.choose_precision("auto", resumed="bf16") == "bf16"  # a resumed run keeps its own
        assert train.choose_precision("auto", resumed="fp32") == "fp32"
        assert train.choose_precision("fp32", resumed="bf16") == "fp32"  # as asked; the recipe check then refuses
