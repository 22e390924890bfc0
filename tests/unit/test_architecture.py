"""The architecture: size, the seed's parameter names, and strict compatibility with the seed."""

from __future__ import annotations

import io

import torch

from model_store import ModelSpec
from model_store.architecture import IdentityPadding, ResidualBlock, pyramidnet
from model_store.imaging import normalize

from ..seed_pyramidnet import pyramidnet110 as seed_pyramidnet110


def test_default_is_pyramidnet110_alpha48_with_1_772_706_parameters():
    model = pyramidnet()
    assert sum(p.numel() for p in model.parameters()) == 1_772_706
    assert [len(stage) for stage in (model.layer1, model.layer2, model.layer3)] == [18, 18, 18]
    assert model.fc_out.in_features == 64  # 16 + alpha


def test_state_dict_uses_the_seed_names():
    keys = pyramidnet().state_dict().keys()
    assert {"conv1.weight", "bn1.weight", "bn_out.running_var", "fc_out.weight", "fc_out.bias"} <= keys
    block = {k.removeprefix("layer2.5.") for k in keys if k.startswith("layer2.5.")}
    assert block == {
        f"{bn}.{p}"
        for bn in ("bn1", "bn2", "bn3")
        for p in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    } | {"conv1.weight", "conv2.weight"}
    assert not any(k.startswith("layer4") for k in keys)


def test_seed_state_dict_loads_strictly_and_computes_the_same_function(exact_images):
    # Realistic weights and inputs: BN statistics estimated on real CIFAR-10 images (fresh ones let
    # the logits of 54 random blocks grow to ~1e13), real images as the input.
    torch.manual_seed(1)
    seed = seed_pyramidnet110()
    x = torch.from_numpy(normalize(exact_images[0][:64], ModelSpec()))
    for m in seed.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # a plain average over the calibration batch
    with torch.no_grad():
        seed.train()(x)
    buf = io.BytesIO()
    torch.save(seed.state_dict(), buf)
    buf.seek(0)

    ours = pyramidnet()
    ours.load_state_dict(torch.load(buf, weights_only=True), strict=True)
    # In float64 two implementations of the same function differ only by summation order,
    # ~1e-15 relative: torch's float64 tolerance (1e-7) has seven orders of margin, where a
    # float32 comparison of 110 layers sits at its tolerance on some CPUs.
    with torch.no_grad():
        logits = seed.double().eval()(x[:8].double())
        torch.testing.assert_close(ours.double().eval()(x[:8].double()), logits)
    assert 0.1 < logits.abs().max() < 100  # sane logits: the comparison means something


def test_blocks_and_shortcuts():
    block = ResidualBlock(16, 19, stride=2)
    assert isinstance(block.down_sample, IdentityPadding)
    assert block(torch.randn(2, 16, 32, 32)).shape == (2, 19, 16, 16)
    # The shortcut zero-pads the new channels and average-pools, with no parameters of its own.
    shortcut = IdentityPadding(2, 3, stride=2)
    x = torch.arange(32.0).reshape(1, 2, 4, 4)
    out = shortcut(x)
    assert out.shape == (1, 3, 2, 2)
    assert not list(shortcut.parameters())
    assert torch.equal(out[0, 2], torch.zeros(2, 2))
    assert out[0, 0, 0, 0] == (0 + 1 + 4 + 5) / 4


def test_depth_alpha_and_classes_are_configurable():
    model = pyramidnet(num_layers=3, alpha=24, num_classes=7)
    assert len(model.layer1) == 3
    assert model.fc_out.out_features == 7
    assert model.fc_out.in_features == 40
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7)
