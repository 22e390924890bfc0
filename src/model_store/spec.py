"""What a stored model is, as data: architecture, labels and the preprocessing it was trained with."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:  # the serving path on the CPU never imports torch
    from .architecture import PyramidNet

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2023, 0.1994, 0.2010)


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

    def build(self) -> PyramidNet:
        """A freshly initialised network of this shape (imports torch)."""
        from .architecture import pyramidnet

        return pyramidnet(num_layers=self.num_layers, alpha=self.alpha, num_classes=self.num_classes)
