"""The training recipe's parts in-process: augmentation, schedule, weight decay, hold-out, device and precision."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from model_store import ModelSpec, devices
from model_store.training import run as train
from model_store.training.data import split_holdout
from model_store.training.run import Draws


def test_augmentation_crops_with_zero_padding_and_flips():
    x = torch.arange(2 * 3 * 32 * 32, dtype=torch.float32).reshape(2, 3, 32, 32) + 1
    out = train.crop_flip(x, Draws.draw(2, torch.Generator().manual_seed(0)))
    assert out.shape == x.shape
    for original, cropped in zip(x, out, strict=True):
        padded = torch.nn.functional.pad(original, (4, 4, 4, 4))
        windows = [padded[:, dy : dy + 32, dx : dx + 32] for dy in range(9) for dx in range(9)]
        assert any(torch.equal(cropped, w) or torch.equal(cropped, w.flip(2)) for w in windows)


def test_cutout_blanks_one_square_per_image_clipped_at_the_border():
    x = torch.ones(64, 3, 32, 32)
    out = train.cut_out(x, 16, Draws.draw(64, torch.Generator().manual_seed(0), cutout=16))
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


def test_a_batch_as_training_sees_it_is_each_image_cropped_flipped_normalised_and_cut_out_as_drawn(exact_images):
    """What the GPU runs, on the CPU device: the batch made on the device from the drawn numbers equals each image
    made by hand from the same numbers."""
    spec, images = ModelSpec(), torch.from_numpy(exact_images[0][:16]).permute(0, 3, 1, 2).contiguous()
    draws = Draws.draw(16, torch.Generator().manual_seed(3), cutout=16)
    batch = train.augment(images, draws, spec, cutout=16)
    assert batch.dtype == torch.float32
    assert batch.device == images.device
    mean, std = torch.tensor(spec.mean).view(3, 1, 1), torch.tensor(spec.std).view(3, 1, 1)
    for k, image in enumerate(images):
        dy, dx, top, left = (int(t[k]) for t in (draws.dy, draws.dx, draws.top, draws.left))
        view = torch.nn.functional.pad(image, (4, 4, 4, 4))[:, dy : dy + 32, dx : dx + 32]
        view = ((view.flip(2) if draws.flip[k] else view).float() / 255 - mean) / std
        view[:, max(top, 0) : max(top + 16, 0), max(left, 0) : max(left + 16, 0)] = 0
        assert torch.equal(batch[k], view), k


def test_the_draws_are_the_generators_numbers_in_one_order_whatever_the_device():
    """Crop rows, crop columns, flips, then the Cutout corners: the order the run's generator state resumes in."""
    draws = Draws.draw(8, torch.Generator().manual_seed(5), cutout=16)
    again = torch.Generator().manual_seed(5)
    assert torch.equal(draws.dy, torch.randint(0, 9, (8,), generator=again))
    assert torch.equal(draws.dx, torch.randint(0, 9, (8,), generator=again))
    assert torch.equal(draws.flip, torch.rand(8, generator=again) < 0.5)
    assert torch.equal(draws.top, torch.randint(0, 32, (8,), generator=again) - 8)
    assert torch.equal(draws.left, torch.randint(0, 32, (8,), generator=again) - 8)
    assert Draws.draw(8, torch.Generator().manual_seed(5)).top is None  # no Cutout: nothing more drawn
    moved = draws.to(torch.device("cpu"))
    assert all(torch.equal(a, b) for a, b in zip(draws, moved, strict=True))


def test_the_device_is_cuda_where_torch_sees_a_gpu_else_the_cpu_and_cuda_asked_for_without_one_is_refused(
    monkeypatch,
):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert devices.choose_device("auto") == torch.device("cpu")
    assert devices.choose_device("cpu") == torch.device("cpu")
    with pytest.raises(RuntimeError, match=r"^device 'cuda:1': torch .* sees no CUDA GPU here$"):
        devices.choose_device("cuda:1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert devices.choose_device("auto") == torch.device("cuda")
    assert devices.choose_device("cuda:1") == torch.device("cuda", 1)
    assert devices.choose_device("cpu") == torch.device("cpu")


def test_autocast_is_bf16_on_the_chosen_device_or_nothing():
    with devices.autocast("bf16", torch.device("cpu"))():
        assert torch.is_autocast_enabled("cpu")
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16
        assert torch.nn.Linear(4, 2)(torch.ones(1, 4)).dtype == torch.bfloat16
    with devices.autocast("fp32", torch.device("cpu"))():
        assert not torch.is_autocast_enabled("cpu")


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


def test_precision_auto_is_bf16_only_where_the_device_computes_it_natively(monkeypatch):
    cpu = torch.device("cpu")
    for native, expected in ((True, "bf16"), (False, "fp32")):
        monkeypatch.setattr(devices, "native_bf16", lambda device, native=native: native)
        assert devices.choose_precision("auto", cpu) == expected
        assert devices.choose_precision("auto", cpu, resumed="bf16") == "bf16"  # a resumed run keeps its own
        assert devices.choose_precision("auto", cpu, resumed="fp32") == "fp32"
        assert devices.choose_precision("fp32", cpu, resumed="bf16") == "fp32"  # as asked; the recipe check refuses


def test_a_gpu_computes_bf16_natively_where_torch_says_so_and_the_cpu_where_openvino_does(monkeypatch):
    from model_store.openvino_ir import native_bf16 as openvino_says

    assert devices.native_bf16(torch.device("cpu")) == openvino_says()
    for supported in (True, False):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda supported=supported: supported)
        assert devices.native_bf16(torch.device("cuda")) is supported
