"""PyramidNet for 32x32 inputs, parameter-compatible with the seed's training code: the torch network,
for training, the torch backends and the parity tests. Serving on the CPU runs the same network as
OpenVINO's IR, built from the weights without torch (conversion.py)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import check_compatible
from .spec import STEM_WIDTH, ModelSpec, pyramid


class IdentityPadding(nn.Module):
    """Shortcut of a block whose width grows: zero-pad the new channels, pool on stride 2."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        # PyramidNet widens every block a little; zero-padding the identity keeps the
        # shortcut parameter-free (the paper's choice over 1x1 projections).
        self.add_channels = out_channels - in_channels
        self.pooling = nn.AvgPool2d(kernel_size=2, stride=2, ceil_mode=True) if stride == 2 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.pad(x, (0, 0, 0, 0, 0, self.add_channels))
        if self.pooling is not None:
            out = self.pooling(out)
        return out


class ResidualBlock(nn.Module):
    """Pre-activation basic block: BN-conv-BN-ReLU-conv-BN, no ReLU after the addition."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.down_sample = IdentityPadding(in_channels, out_channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn1(x)
        out = self.conv1(out)
        out = self.bn2(out)
        out = self.relu(out)
        out = self.conv2(out)
        out = self.bn3(out)
        return out + self.down_sample(x)


class PyramidNet(nn.Module):
    """Three stages of `num_layers` blocks whose width grows linearly by `alpha` in total."""

    def __init__(self, num_layers: int, alpha: float, num_classes: int) -> None:
        super().__init__()
        self.num_layers = num_layers
        self.alpha = alpha
        self.num_classes = num_classes

        self.conv1 = nn.Conv2d(3, STEM_WIDTH, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(STEM_WIDTH)
        widths = pyramid(num_layers, alpha)
        self.layer1, self.layer2, self.layer3 = (
            nn.Sequential(*(ResidualBlock(*block) for block in stage)) for stage in widths
        )
        self.out_channels = widths[-1][-1][1]
        self.bn_out = nn.BatchNorm2d(self.out_channels)
        self.relu_out = nn.ReLU(inplace=True)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc_out = nn.Linear(self.out_channels, num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn1(self.conv1(x))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = self.relu_out(self.bn_out(x))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc_out(x)


def pyramidnet(*, num_layers: int = 18, alpha: float = 48, num_classes: int = 10) -> PyramidNet:
    """PyramidNet-110 (alpha 48) by default: 18 blocks per stage, widths 16 -> 64.

    Han, Kim and Kim, "Deep Pyramidal Residual Networks", CVPR 2017,
    https://arxiv.org/abs/1610.02915
    """
    return PyramidNet(num_layers=num_layers, alpha=alpha, num_classes=num_classes)


def from_spec(spec: ModelSpec) -> PyramidNet:
    """A freshly initialised network of the shape a stored model's spec describes."""
    return pyramidnet(num_layers=spec.num_layers, alpha=spec.alpha, num_classes=spec.num_classes)


def build_network(spec: ModelSpec, weights: Mapping[str, np.ndarray]) -> PyramidNet:
    """The network `spec` describes, with `weights` (a state dict as arrays) loaded strictly; CheckpointError
    lists any misfit."""
    check_compatible(spec, weights)
    module = from_spec(spec)
    module.load_state_dict({k: torch.tensor(np.asarray(v)) for k, v in weights.items()}, strict=True)
    return module


def as_arrays(module: nn.Module) -> dict[str, np.ndarray]:
    """A network's state dict as arrays on the CPU: float32 (conversion.build_ir's input), and the batch
    norms' step counts as they are."""
    return {
        k: v.detach().cpu().float().numpy() if v.is_floating_point() else v.detach().cpu().numpy()
        for k, v in module.state_dict().items()
    }
