"""Ready for a GPU without one: the GPU check's command line, and the kit's OpenVINO, cut to fit a GPU machine's call,
still registering and serving (the check itself, rehearsed on the CPU: tests/e2e/test_gpu_check.py)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import gpu_kit
import numpy as np
import openvino
import pytest
import torch

from ..servers import REPO


def bench_gpu(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bench.gpu", *args], cwd=REPO, capture_output=True, text=True, timeout=120
    )


def test_the_gpu_check_documents_its_one_command():
    done = bench_gpu("--help")
    assert done.returncode == 0, done.stderr
    assert "python -m bench.gpu --data DATA --out DIR" in done.stdout
    for part in ("parity", "offline", "training", "served", "--device cpu"):
        assert part in done.stdout


def test_the_gpu_check_without_cuda_exits_with_one_clear_line():
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU: the check runs on it")
    done = bench_gpu()
    assert done.returncode == 1
    assert done.stdout.strip().splitlines() == [
        f"bench.gpu: no CUDA GPU here (torch {torch.__version__} sees none); --device cpu rehearses the check"
    ]
    assert done.stderr == ""


def test_openvino_cut_to_its_cpu_plugin_and_ir_reader_compiles_and_runs_the_shipped_model(tmp_path):
    site = tmp_path / "site"
    shutil.copytree(Path(openvino.__file__).parent, site / "openvino")
    gpu_kit.slim_openvino(site / "openvino")
    libs = {p.name.split(".so")[0] for p in (site / "openvino" / "libs").iterdir()}
    assert {"libopenvino", "libopenvino_intel_cpu_plugin", "libopenvino_ir_frontend"} <= libs
    assert not libs & {"libopenvino_intel_gpu_plugin", "libopenvino_intel_npu_plugin", "libopenvino_onnx_frontend"}
    assert not [p for p in (site / "openvino" / "frontend").iterdir() if p.is_dir()]  # the model importers
    before = sum(p.stat().st_size for p in Path(openvino.__file__).parent.rglob("*") if p.is_file())
    after = sum(p.stat().st_size for p in site.rglob("*") if p.is_file())
    assert before - after > 80e6  # the GPU and NPU plugins and the model importers

    # In a fresh interpreter that finds the cut copy first: read the shipped fp32 weights into an IR (the registry's
    # way), compile it for the CPU as the service does, and answer as the full OpenVINO does.
    x = np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    code = f"""
import sys, numpy as np, openvino
assert openvino.__file__.startswith({str(site)!r}), openvino.__file__
from model_store.conversion import build_ir
from model_store.openvino_ir import compile_ir
from model_store.registry import embedded_default
from model_store.spec import ModelSpec
run = compile_ir(build_ir(ModelSpec(), embedded_default().state_dict), "fp32")
np.save({str(tmp_path / "cut.npy")!r}, run(np.load({str(tmp_path / "x.npy")!r})))
"""
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-3000:]

    from model_store.conversion import build_ir
    from model_store.openvino_ir import compile_ir
    from model_store.registry import embedded_default
    from model_store.spec import ModelSpec

    full = compile_ir(build_ir(ModelSpec(), embedded_default().state_dict), "fp32")(x)
    assert np.array_equal(np.load(tmp_path / "cut.npy"), full)
