"""The GPU check (`python -m bench.gpu`) rehearsed on the CPU, end to end: what a GPU window would run first must not
fail there for a reason a CPU could have shown."""

from __future__ import annotations

import json
import subprocess
import sys

from ..servers import REPO


def test_the_gpu_check_rehearsed_on_the_cpu_measures_every_stage(cifar10_dir, tmp_path):
    quick = ["--device", "cpu", "--no-compile", "--seconds", "2", "--offline-seconds", "0.2", "--max-batch", "16"]
    quick += ["--batch-sizes", "1", "16"]  # a rehearsal of the code, not a measurement: two sizes do
    done = subprocess.run(
        [sys.executable, "-m", "bench.gpu", "--data", str(cifar10_dir), "--out", str(tmp_path), *quick],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    record = json.loads((tmp_path / "gpu.json").read_text())
    parity = record["parity"]["fp32"]  # the torch backend (fused) against eager, both on the CPU here
    assert parity["max_abs_dp"] < 1e-5
    assert parity["top1_agreement_pct"] == 100.0
    assert parity["top1_pct"] == record["parity"]["cpu fp32 (reference)"]["top1_pct"] > 90
    assert list(record["offline_images_per_s"]) == ["1", "16"]
    assert all(rate > 0 for rate in record["offline_images_per_s"].values())
    assert record["training_eager"]["images_per_s"] > 0
    served = record["served"]
    assert served["codes"] == {"200": served["codes"]["200"]}  # queued, none shed
    assert served["images_per_s"] > 0
    assert served["settings"]["PYRAMIDNET_MAX_BATCH_SIZE"] == "16"
    assert (tmp_path / "service.log").stat().st_size > 0
    table = done.stdout[done.stdout.index("| precision |") :]
    assert "served /classify_batch, 32 clients x 16 images" in table
    assert "300 epochs at" in table.splitlines()[-1]
