"""OpenVINO's throughput under a CPU quota, per thread count: why the runtime's threads follow the
quota rather than the visible cores (openvino_ir.cpu_threads).

    # as root, cgroup v1: a 1-CPU quota on this 2-core machine, then this script inside it
    mkdir -p /sys/fs/cgroup/cpu/quota1 && echo 100000 > /sys/fs/cgroup/cpu/quota1/cpu.cfs_quota_us
    bash -c 'echo $$ > /sys/fs/cgroup/cpu/quota1/tasks; exec .venv/bin/python -m bench.quota --threads 2 1'

Inside a container the quota is the container's own cgroup and `cpu_threads()` reads it; in a
child cgroup of the host, as above, it does not, so the thread counts are given here. Each count
is compiled as served (one stream per thread) and timed at batch 16, alternating, `--rounds`
times. A figure, not a test.
"""

from __future__ import annotations

import argparse

from model_store import DEFAULT_MODEL_NAME, get_model
from model_store.openvino_ir import compile_ir, ir_path
from model_store.spec import ModelSpec

from .offline import real_batch, throughput


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=f"{DEFAULT_MODEL_NAME}:latest")
    parser.add_argument("--precision", default="bf16", choices=["fp32", "bf16", "int8"])
    parser.add_argument("--threads", type=int, nargs="+", default=[2, 1])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=6.0)
    args = parser.parse_args()

    xml = ir_path(get_model(args.model).path, args.precision)
    batch = real_batch(16, ModelSpec())
    for _ in range(args.rounds):
        for threads in args.threads:
            images_per_s, _ = throughput(compile_ir(xml, args.precision, threads=threads), batch, args.seconds)
            print(f"{args.precision}, batch 16, {threads} threads: {images_per_s:.0f} img/s", flush=True)


if __name__ == "__main__":
    main()
