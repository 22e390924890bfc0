"""Ready for a GPU without one: the GPU check's command line, and the kit's OpenVINO, cut to fit a GPU machine's call,
still registering and serving (the check itself, rehearsed on the CPU: tests/e2e/test_gpu_check.py)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
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


def test_gpu_sh_unpacks_what_a_call_carried_once_and_refuses_a_kit_for_another_python(tmp_path):
    """scripts/gpu.sh as the GPU machine runs it, in a checkout of its own: no kit, a kit for another Python, then
    a kit whose archive holds a module the command imports, unpacked on the first call only."""
    shutil.copytree(REPO / "scripts", tmp_path / "scripts", ignore=shutil.ignore_patterns("__pycache__"))
    site = tmp_path / "site"
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "PYRAMIDNET_GPU_SITE": str(site)}

    def gpu_sh(*command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "scripts/gpu.sh", *command], cwd=tmp_path, env=env, capture_output=True, text=True
        )

    none = gpu_sh("true")
    assert none.returncode == 2
    assert "no kit here (.gpu/kit.json)" in none.stderr

    (tmp_path / ".gpu").mkdir()
    (tmp_path / ".gpu" / "kit.json").write_text('{"python": "3.99"}')
    other = gpu_sh("true")
    assert other.returncode == 2
    assert f"packed for Python 3.99 and this python3 is {sys.version_info[0]}.{sys.version_info[1]}" in other.stderr

    (tmp_path / ".gpu" / "kit.json").write_text(f'{{"python": "{sys.version_info[0]}.{sys.version_info[1]}"}}')
    (tmp_path / "kitmod.py").write_text("WHERE = 'the kit'\n")
    with tarfile.open(tmp_path / ".gpu" / "train.tar.xz", "w:xz") as tar:
        tar.add(tmp_path / "kitmod.py", arcname="kitmod.py")
    (tmp_path / "kitmod.py").unlink()
    first = gpu_sh("python3", "-c", "import kitmod, os; print(kitmod.WHERE, os.environ['BENTOML_DO_NOT_TRACK'])")
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == "the kit true"
    (site / "kitmod.py").write_text("WHERE = 'unpacked once'\n")  # a second call must not unpack over it
    again = gpu_sh("python3", "-c", "import kitmod; print(kitmod.WHERE)")
    assert again.stdout.strip() == "unpacked once"
