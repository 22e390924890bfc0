"""The package's API is imported on first use: a module of it brings its own imports alone (what lets a GPU machine
train with torch and pydantic, no BentoML or OpenVINO: docs/training.md#on-a-gpu)."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import gpu_kit
import pytest

import model_store


def imported_after(statement: str) -> set[str]:
    """The top-level packages a fresh interpreter has imported after `statement`."""
    code = f"import sys\n{statement}\nimport json; print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(json.loads(done.stdout.splitlines()[-1]))


# What the GPU machine's image holds that training uses, beyond torch and what torch imports (its package list:
# /work/.library/device/KINDS.md, as read in 2026-11).
IMAGE = {"numpy", "PIL", "tqdm"}


@pytest.mark.parametrize(
    "statement",
    [
        "import model_store.training.run",
        "sys.argv = ['train.py']; sys.path.insert(0, 'scripts'); import train",  # scripts/train.py's imports
    ],
)
def test_training_imports_nothing_a_gpu_machine_lacks_but_pydantic_which_the_kit_carries(statement):
    everything = imported_after(statement)
    stdlib = {name for name in everything if name in sys.stdlib_module_names or name.startswith("_")}
    brought = everything - imported_after("import torch") - stdlib
    assert brought - {"model_store", "train"} <= gpu_kit.TRAINING | IMAGE
    assert "pydantic" in brought  # the one it needs (ModelSpec)
    assert not brought & {"bentoml", "openvino", "safetensors", "nncf", "onnxruntime"}


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
