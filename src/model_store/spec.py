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
