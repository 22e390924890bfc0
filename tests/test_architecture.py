"""The architecture: size, the seed's parameter names, and strict compatibility with the seed."""

from __future__ import annotations

import io

import torch

from model_store import pyramidnet
from model_store.architecture import IdentityPadding, ResidualBlock

from .seed_pyramidnet import pyramidnet110 as seed_pyramidnet110


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
        f"{bn}.{p}" for bn in ("bn1", "bn2", "bn3") for p in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    } | {"conv1.weight", "conv2.weight"}
    assert not any(k.startswith("layer4") for k in keys)


def test_seed_state_dict_loads_strictly_and_computes_the_same_function():
    torch.manual_seed(1)
    seed = seed_pyramidnet110()
    with torch.no_grad():  # non-trivial BN statistics so the comparison means something
        for m in seed.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    buf = io.BytesIO()
    torch.save(seed.state_dict(), buf)
    buf.seek(0)

    ours = pyramidnet()
    ours.load_state_dict(torch.load(buf, weights_only=True), strict=True)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x), seed.eval()(x))


def test_blocks_and_shortcuts():
    block = ResidualBlock(16, 19, stride=2)
    assert isinstance(block.down_sample, IdentityPadding)
    assert block(torch.randn(2, 16, 32, 32)).shape == (2, 19, 16, 16)
    # The shortcut zero-pads the new channels and average-pools, with no parameters of its own.
    shortcut = IdentityPadding(2, 3, stride=2)
    x = torch.arange(32.0).reshape(1, 2, 4, 4)
    out = shortcut(x)
    assert out.shape == (1, 3, 2, 2) and not list(shortcut.parameters())
    assert torch.equal(out[0, 2], torch.zeros(2, 2))
    assert out[0, 0, 0, 0] == (0 + 1 + 4 + 5) / 4


def test_depth_alpha_and_classes_are_configurable():
    model = pyramidnet(num_layers=3, alpha=24, num_classes=7)
    assert len(model.layer1) == 3 and model.fc_out.out_features == 7 and model.fc_out.in_features == 40
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7)
