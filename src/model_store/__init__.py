"""PyramidNet on CIFAR-10: architecture, checkpoints, model store, preprocessing and schemas."""

from __future__ import annotations

from .architecture import PyramidNet, pyramidnet
from .checkpoint import Checkpoint, CheckpointError, UnsafeCheckpointError, read_checkpoint
from .errors import ApiError, ImageTooLarge, InvalidImage, TooManyImages, UnsupportedMediaType, ValidationFailed
from .imaging import decode_image, preprocess, preprocess_batch
from .inference import Classifier, resolve_device
from .registry import (
    DEFAULT_MODEL_NAME,
    RegistrationError,
    embedded_default,
    get_model,
    load_classifier,
    read_spec,
    register,
)
from .schemas import ErrorResponse, ModelInfo, Prediction, to_predictions
from .settings import Settings
from .spec import CIFAR10_CLASSES, CIFAR10_MEAN, CIFAR10_STD, ModelSpec

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "DEFAULT_MODEL_NAME",
    "Checkpoint",
    "CheckpointError",
    "Classifier",
    "ApiError",
    "ErrorResponse",
    "ImageTooLarge",
    "InvalidImage",
    "ModelInfo",
    "ModelSpec",
    "Prediction",
    "PyramidNet",
    "RegistrationError",
    "Settings",
    "TooManyImages",
    "UnsafeCheckpointError",
    "UnsupportedMediaType",
    "ValidationFailed",
    "decode_image",
    "embedded_default",
    "get_model",
    "load_classifier",
    "preprocess",
    "preprocess_batch",
    "pyramidnet",
    "read_checkpoint",
    "read_spec",
    "register",
    "resolve_device",
    "to_predictions",
]
