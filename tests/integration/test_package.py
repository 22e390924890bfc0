"""The package's API is imported on first use: a module of it brings its own imports alone (what lets a GPU machine
train with torch and pydantic, no BentoML or OpenVINO: docs/training.md#on-a-gpu)."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import pytest

import model_store


def imported_after(statement: str) -> set[str]:
    """The top-level packages a fresh interpreter has imported after `statement`."""
    code = f"import sys\n{statement}\nimport json; print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(json.loads(done.stdout.splitlines()[-1]))


@pytest.mark.parametrize(
    "statement",
    [
        "import model_store.training.run",
        "import model_store.cifar10",
        "sys.argv = ['train.py']; sys.path.insert(0, 'scripts'); import train",  # scripts/train.py's imports
    ],
)
def test_training_imports_neither_bentoml_nor_openvino(statement):
    modules = imported_after(statement)
    assert not modules & {"bentoml", "openvino", "onnxruntime", "nncf", "safetensors"}
    if "cifar10" not in statement:
        assert {"torch", "pydantic"} <= modules


def test_importing_the_package_imports_none_of_its_modules():
    modules = imported_after("import model_store")
    assert not modules & {"bentoml", "openvino", "torch", "pydantic", "numpy"}


def test_every_name_of_the_api_is_its_modules_own():
    for name in model_store.__all__:
        value = getattr(model_store, name)
        home = importlib.import_module(f"model_store.{model_store._HOME[name]}")
        assert value is getattr(home, name), name
    with pytest.raises(AttributeError, match="has no attribute 'load_classifer'"):
        model_store.load_classifer  # noqa: B018  (a misspelt name fails as any missing attribute does)
    from model_store import ModelSpec, load_classifier  # the way users import them

    assert ModelSpec is model_store.spec.ModelSpec
    assert load_classifier is model_store.loading.load_classifier
