"""What a stored model is, as data: architecture, labels and the preprocessing it was trained with."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_MODEL_NAME = "pyramidnet-cifar10"

CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2023, 0.1994, 0.2010)

STAGES = ("layer1", "layer2", "layer3")
STEM_WIDTH = 16
BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def pyramid(num_layers: int, alpha: float) -> list[list[tuple[int, int, int]]]:
    """Each stage's residual blocks as (in_channels, out_channels, stride): the width grows by
    alpha / (3 num_layers) a block from 16, rounded, and the first block of stages 2 and 3 halves the
    side. The one place the widths are computed: the torch network (architecture.py) and the
    state dict it has (`ModelSpec.state_shapes`) both read it."""
    add_rate = alpha / (3 * num_layers)
    width = float(STEM_WIDTH)
    stages = []
    for first_stride in (1, 2, 2):
        blocks = []
        for i in range(num_layers):
            blocks.append((round(width), round(width + add_rate), first_stride if i == 0 else 1))
            width += add_rate
        stages.append(blocks)
    return stages


class ModelSpec(BaseModel):
    """Everything needed to rebuild the network and feed it, stored beside the weights."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    architecture: Literal["pyramidnet"] = "pyramidnet"
    num_layers: int = Field(18, ge=1, description="residual blocks per stage")
    alpha: float = Field(48, gt=0, description="total widening over the three stages")
    classes: tuple[str, ...] = Field(CIFAR10_CLASSES, min_length=2, description="class names in label order")
    input_size: int = Field(32, ge=8, description="side of the square input, pixels")
    mean: tuple[float, float, float] = CIFAR10_MEAN
    std: tuple[float, float, float] = CIFAR10_STD
    resize: Literal["center_crop", "stretch"] = Field(
        "center_crop",
        description="how a non-square or larger image becomes input_size x input_size: "
        "center_crop keeps the aspect ratio (scale the short side, crop the centre), stretch does not",
    )
    interpolation: Literal["nearest", "bilinear", "bicubic", "lanczos"] = "bicubic"

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def state_shapes(self) -> dict[str, tuple[int, ...]]:
        """The state dict of the network this spec describes, names and shapes, without building it
        (what registration checks a checkpoint against, with no torch)."""

        def batch_norm(name: str, width: int) -> dict[str, tuple[int, ...]]:
            return {f"{name}.{k}": (width,) for k in ("weight", "bias", "running_mean", "running_var")} | {
                f"{name}.num_batches_tracked": ()
            }

        shapes = {"conv1.weight": (STEM_WIDTH, 3, 3, 3), **batch_norm("bn1", STEM_WIDTH)}
        for stage, blocks in zip(STAGES, pyramid(self.num_layers, self.alpha), strict=True):
            for i, (width_in, width_out, _) in enumerate(blocks):
                block = f"{stage}.{i}"
                shapes |= batch_norm(f"{block}.bn1", width_in)
                shapes[f"{block}.conv1.weight"] = (width_out, width_in, 3, 3)
                shapes |= batch_norm(f"{block}.bn2", width_out)
                shapes[f"{block}.conv2.weight"] = (width_out, width_out, 3, 3)
                shapes |= batch_norm(f"{block}.bn3", width_out)
        width = blocks[-1][1]
        shapes |= batch_norm("bn_out", width)
        shapes |= {"fc_out.weight": (self.num_classes, width), "fc_out.bias": (self.num_classes,)}
        return shapes
