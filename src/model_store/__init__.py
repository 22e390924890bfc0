"""PyramidNet on CIFAR-10: the serving library.

Importing the package, and everything the CPU path uses (serving, and registering the embedded
default), never imports torch. The torch side lives in its own modules: architecture (the network
in torch), pth (reading .pth checkpoints) and backends (the torch backends, for a GPU or by
choice). The layers, and the contracts that keep them, are in docs/architecture.md.
"""

from __future__ import annotations

__version__ = "0.1.0"  # the package's one version (pyproject.toml reads it)

from .errors import ApiError, ImageTooLarge, InvalidImage, TooManyImages, UnsupportedMediaType, ValidationFailed
from .imaging import decode_image, preprocess, preprocess_batch
from .inference import Classifier
from .loading import load_classifier
from .schemas import ErrorResponse, ModelInfo, Prediction, to_predictions
from .settings import Settings
from .spec import CIFAR10_CLASSES, CIFAR10_MEAN, CIFAR10_STD, DEFAULT_MODEL_NAME, ModelSpec
from .store import get_model, read_spec

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "DEFAULT_MODEL_NAME",
    "ApiError",
    "Classifier",
    "ErrorResponse",
    "ImageTooLarge",
    "InvalidImage",
    "ModelInfo",
    "ModelSpec",
    "Prediction",
    "Settings",
    "TooManyImages",
    "UnsupportedMediaType",
    "ValidationFailed",
    "decode_image",
    "get_model",
    "load_classifier",
    "preprocess",
    "preprocess_batch",
    "read_spec",
    "to_predictions",
]
