"""PyramidNet on CIFAR-10: the serving library.

Importing the package, and everything the CPU path uses (serving, and registering the embedded
default), never imports torch. The torch side lives in its own modules: architecture (the network
in torch), pth (reading .pth checkpoints) and backends (the torch backends, for a GPU or by
choice). The layers, and the contracts that keep them, are in docs/architecture.md.
"""

from __future__ import annotations

__version__ = "0.1.0"  # the package's one version (pyproject.toml reads it)

import importlib
from typing import TYPE_CHECKING, Any

# The package's API, by the module each name lives in. A name's module is imported when the name is first used
# (PEP 562): importing one module of the package (model_store.training.run, model_store.cifar10) brings that
# module's own imports alone, not BentoML's and OpenVINO's with the serving path. A GPU machine trains with torch
# and pydantic and nothing else (docs/training.md#on-a-gpu); tests/integration/test_package.py holds this to it.
_API = {
    "errors": (
        "ApiError",
        "ImageTooLarge",
        "InvalidImage",
        "TooManyImages",
        "UnsupportedMediaType",
        "ValidationFailed",
    ),
    "imaging": ("decode_image", "preprocess", "preprocess_batch"),
    "inference": ("Classifier",),
    "loading": ("load_classifier",),
    "schemas": ("ErrorResponse", "ModelInfo", "Prediction", "to_predictions"),
    "settings": ("Settings",),
    "spec": ("CIFAR10_CLASSES", "CIFAR10_MEAN", "CIFAR10_STD", "DEFAULT_MODEL_NAME", "ModelSpec"),
    "store": ("get_model", "read_spec"),
}
_HOME = {name: module for module, names in _API.items() for name in names}
__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_HOME[name]}", __name__), name)
    globals()[name] = value  # the next use finds it here
    return value


if TYPE_CHECKING:  # the same names, for type checkers and editors
    from .errors import (
        ApiError as ApiError,
    )
    from .errors import (
        ImageTooLarge as ImageTooLarge,
    )
    from .errors import (
        InvalidImage as InvalidImage,
    )
    from .errors import (
        TooManyImages as TooManyImages,
    )
    from .errors import (
        UnsupportedMediaType as UnsupportedMediaType,
    )
    from .errors import (
        ValidationFailed as ValidationFailed,
    )
    from .imaging import (
        decode_image as decode_image,
    )
    from .imaging import (
        preprocess as preprocess,
    )
    from .imaging import (
        preprocess_batch as preprocess_batch,
    )
    from .inference import (
        Classifier as Classifier,
    )
    from .loading import (
        load_classifier as load_classifier,
    )
    from .schemas import (
        ErrorResponse as ErrorResponse,
    )
    from .schemas import (
        ModelInfo as ModelInfo,
    )
    from .schemas import (
        Prediction as Prediction,
    )
    from .schemas import (
        to_predictions as to_predictions,
    )
    from .settings import (
        Settings as Settings,
    )
    from .spec import (
        CIFAR10_CLASSES as CIFAR10_CLASSES,
    )
    from .spec import (
        CIFAR10_MEAN as CIFAR10_MEAN,
    )
    from .spec import (
        CIFAR10_STD as CIFAR10_STD,
    )
    from .spec import (
        DEFAULT_MODEL_NAME as DEFAULT_MODEL_NAME,
    )
    from .spec import (
        ModelSpec as ModelSpec,
    )
    from .store import (
        get_model as get_model,
    )
    from .store import (
        read_spec as read_spec,
    )
