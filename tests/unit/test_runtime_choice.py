"""How the runtime is chosen: backend and precision per device, native bf16, workers and threads per CPU budget."""

from __future__ import annotations

import os

import pytest

from model_store import Classifier
from model_store.bentoml_internals import cpu_budget
from model_store.inference import MAX_INT8_DROP_PP, choose
from model_store.openvino_ir import Int8Accuracy, native_bf16
from model_store.options import BACKENDS


def runtime(*args, **kwargs) -> tuple[str, str]:
    backend, precision, _ = choose(*args, **kwargs)
    return backend, precision


# 10,000 images on which int8 and fp32 differ on 4: lost 3, gained 1 (0.02 pp; bound 0.05 pp).
CLOSE = Int8Accuracy(int8_top1=92.88, fp32_top1=92.9, images=10_000, on="held-out images", losses=3, gains=1)
# What the shipped int8 measured on the 1,000 held-out training images: one image, 0.1 pp, of 9 that differ.
NOISY = Int8Accuracy(int8_top1=92.8, fp32_top1=92.9, images=1000, on="held-out images", losses=5, gains=4)
FAR = Int8Accuracy(int8_top1=92.3, fp32_top1=92.9, images=1000, on="held-out images", losses=9, gains=3)


def test_the_default_is_the_measured_fastest_and_each_override_is_checked():
    assert runtime("cpu") == ("openvino", "bf16" if native_bf16() else "fp32")
    assert runtime("cuda") == ("fused", "fp16")
    assert runtime("cpu", "onnx") == ("onnx", "fp32")  # bf16 on the CPU is OpenVINO's
    assert runtime("cpu", precision="fp32") == ("openvino", "fp32")
    assert runtime("cpu", precision="int8") == ("openvino", "int8")
    assert runtime("cuda", "compile", "bf16") == ("compile", "bf16")
    with pytest.raises(ValueError, match="fp16 runs only on CUDA"):
        choose("cpu", "fused", "fp16")
    with pytest.raises(ValueError, match="runs through OpenVINO"):
        choose("cpu", "eager", "bf16")
    with pytest.raises(ValueError, match="int8 runs only through OpenVINO"):
        choose("cuda", "fused", "int8")
    with pytest.raises(ValueError, match="runs on the CPU"):
        choose("cuda", "openvino")
    with pytest.raises(ValueError, match="unknown backend"):
        choose("cpu", "tensorrt")


@pytest.mark.parametrize("bf16", [True, False])
def test_the_cpu_serves_int8_only_when_its_int8_model_was_measured_within_the_bound(monkeypatch, bf16):
    monkeypatch.setattr("model_store.inference.native_bf16", lambda: bf16)
    other = "bf16" if bf16 else "fp32"
    close = choose("cpu", int8=CLOSE)
    assert close[:2] == ("openvino", "int8")
    assert (
        f"within {MAX_INT8_DROP_PP} pp of fp32 (92.88 % against 92.90 % on 10,000 held-out images; the drop's "
        "95 % upper bound 0.05 pp)" in close.reason
    )
    assert runtime("cpu", int8=FAR) == ("openvino", other)
    assert "is not shown within 0.1 pp of fp32 (92.30 % against 92.90 %" in choose("cpu", int8=FAR).reason
    # A drop of 0.1 pp measured on 1,000 images is one image: its bound (0.59 pp) is far outside.
    assert NOISY.drop_pp == MAX_INT8_DROP_PP
    assert runtime("cpu", int8=NOISY) == ("openvino", other)
    assert "upper bound 0.59 pp" in choose("cpu", int8=NOISY).reason
    assert runtime("cpu", int8=None) == ("openvino", other)  # no int8 model, or one never measured
    assert "no int8 model measured within 0.1 pp" in choose("cpu").reason
    assert choose("cpu").reason.startswith("this CPU computes bf16 natively" if bf16 else "this CPU has no native bf16")
    assert runtime("cpu", "onnx", int8=CLOSE) == ("onnx", "fp32")  # int8 is OpenVINO's
    assert runtime("cpu", precision="fp32", int8=CLOSE) == ("openvino", "fp32")  # asked for wins
    assert choose("cpu", precision="fp32", int8=CLOSE).reason == "asked for"
    assert runtime("cuda", int8=CLOSE) == ("fused", "fp16")


def test_a_cpu_without_native_bf16_defaults_to_fp32_and_refuses_bf16(monkeypatch):
    # What OpenVINO reports about the CPU is the input here: an older CPU reports no BF16.
    monkeypatch.setattr("model_store.inference.native_bf16", lambda: False)
    assert runtime("cpu") == ("openvino", "fp32")
    assert choose("cpu").reason.startswith("this CPU has no native bf16")
    with pytest.raises(ValueError, match="bf16 needs a CPU that computes it natively"):
        choose("cpu", precision="bf16")
    assert runtime("cuda", precision="bf16") == ("fused", "bf16")  # a GPU's bf16 is autocast, not this


def test_native_bf16_is_what_openvino_reports():
    import openvino

    assert native_bf16() == ("BF16" in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def test_offline_reference_runs_the_default_backend(offline: Classifier):
    # The served runner and the offline reference load the same way, so parity tests compare like with like.
    assert (offline.backend, offline.precision) == ("openvino", "bf16" if native_bf16() else "fp32")


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_backend_can_be_chosen_by_environment(backend, monkeypatch):
    from model_store import Settings

    monkeypatch.setenv("PYRAMIDNET_BACKEND", backend)
    assert Settings().backend == backend


@pytest.mark.parametrize(("cpus", "workers"), [(1, 1), (2, 1), (2.5, 1), (3, 1), (4, 2), (8, 3), (16, 6)])
def test_auto_api_workers_take_a_third_of_the_cpus_and_at_least_one(cpus, workers):
    from model_store import Settings

    assert Settings().api_worker_count(cpus) == workers


def test_api_workers_set_by_environment_are_taken_as_given(monkeypatch):
    from model_store import Settings

    monkeypatch.setenv("PYRAMIDNET_API_WORKERS", "4")
    assert Settings().api_worker_count(2) == 4
    monkeypatch.setenv("PYRAMIDNET_API_WORKERS", "auto")
    assert Settings().api_worker_count(cpu_budget()) >= 1  # BentoML's count of this machine's CPUs


@pytest.mark.parametrize(("quota", "expected"), [(None, "visible"), (1.5, 1), (0.5, 1), (1.0, 1)])
def test_openvino_threads_fit_a_container_cpu_quota(monkeypatch, quota, expected):
    """A quota (docker --cpus, a Kubernetes CPU limit) leaves every host core visible: the threads
    follow the quota, rounded down, never the visible cores beyond it."""
    from model_store import bentoml_internals, openvino_ir

    visible = len(os.sched_getaffinity(0))
    monkeypatch.setattr(bentoml_internals, "system_resources", lambda: {"cpu": float(quota or 10 * visible)})
    assert openvino_ir.cpu_threads() == (visible if expected == "visible" else expected)
    assert bentoml_internals.cpu_budget() == min(visible, quota or visible)
