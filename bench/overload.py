"""Capacity, a burst and an overload storm against the shipped settings, in one run, with `hey`.

    python -m bench.overload                         # about 3 minutes on 2 cores
    python -m bench.overload --storm-clients 256 --storm-seconds 30 --out docs/performance/overload.json
    git worktree add ../before 68d06d2 && python -m bench.overload --checkout ../before   # an earlier service

On a fresh `bentoml serve` of the model with its default settings:
1. burst: 64 concurrent /classify requests on the idle server, once;
2. capacity: 32 closed-loop clients on /classify (`--seconds`), after a warm-up;
3. storm: `--storm-clients` clients that retry at once (hey sends the next request as soon as the
   last is answered, 503 or not) for `--storm-seconds`, while /readyz is probed every second;
then the seed design (bench/baseline_app.py) and LitServe (bench/litserve_app.py) at 32 clients,
and the offline throughput of the service's own backend at the batch size it forms. Prints the
figures and the ratios the overload work is judged by; writes them as JSON with `--out`.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

import httpx

from model_store import DEFAULT_MODEL_NAME
from model_store.inference import choose

from . import offline
from .harness import REPO, command, cpu_seconds, free_port, serving
from .hey import DATA_HELP, HEADER, jpeg_archive, load_images, multipart, row, run_level, summarise
from .hey import hey as run_hey


def readiness_during(url: str, stop: threading.Event, seen: list[int]) -> None:
    while not stop.wait(1.0):
        try:
            seen.append(httpx.get(url + "/readyz", timeout=5).status_code)
        except httpx.HTTPError:
            seen.append(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=f"{DEFAULT_MODEL_NAME}:latest")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds at concurrency 32")
    parser.add_argument("--storm-clients", type=int, default=256)
    parser.add_argument("--storm-seconds", type=float, default=30.0)
    parser.add_argument("--data", type=Path, help=DATA_HELP)
    parser.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "fp32", "bf16", "int8", "int8+recheck"],
        help="served and offline; auto: the service's default on this CPU",
    )
    parser.add_argument(
        "--checkout",
        type=Path,
        default=REPO,
        help="serve this checkout's service instead (the peers and the offline figure stay ours)",
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    checkout = args.checkout.resolve()
    precision = choose("cpu", "openvino", args.precision)[1]  # spelled out, so an older --checkout runs it too
    images = load_images(jpeg_archive(args.data))
    env = {"PYRAMIDNET_MODEL": args.model, "PYRAMIDNET_PRECISION": precision}
    logs = Path(tempfile.mkdtemp(prefix="bench-overload-"))
    record: dict = {"model": args.model, "precision": precision, "checkout": str(checkout)}

    port = free_port()
    started = time.monotonic()
    with serving(command("service", port), port, env, logs / "service.log", checkout) as (url, group):
        record["ready_s"] = round(time.monotonic() - started, 1)
        print(f"ready {record['ready_s']} s after `bentoml serve`")
        body = logs / "one.multipart"
        body.write_bytes(multipart("image", images[:1]))
        burst = run_hey(url + "/classify", body, 64, requests=64)
        record["burst"] = summarise(burst, 1.0, 1)["codes"]
        print(f"burst of 64 on an idle server: {record['burst']}")

        print(HEADER)
        run_level(url, images, 32, duration=2.0, warmup=0)
        before = cpu_seconds(group)
        record["capacity"] = run_level(url, images, 32, duration=args.seconds, warmup=0)
        used, answered = cpu_seconds(group), record["capacity"]["requests"]
        record["capacity"]["cpu_ms_per_request"] = {
            role: round((used[role] - before.get(role, 0)) / answered * 1000, 2) for role in used
        }
        print(row(record["capacity"]) + f"  CPU ms/request {record['capacity']['cpu_ms_per_request']}", flush=True)

        stop, readyz = threading.Event(), []
        probe = threading.Thread(target=readiness_during, args=(url, stop, readyz), daemon=True)
        probe.start()
        record["storm"] = run_level(url, images, args.storm_clients, duration=args.storm_seconds, warmup=0)
        stop.set()
        probe.join()
        record["storm"]["readyz"] = {str(code): readyz.count(code) for code in sorted(set(readyz))}
        print(row(record["storm"]) + f"  readyz {record['storm']['readyz']}", flush=True)

    for name in ("seed_design", "litserve"):  # the designs compared with, same weights and JPEGs
        port = free_port()
        with serving(command(name, port), port, env, logs / f"{name}.log") as (url, _):
            record[name] = run_level(url, images, 32, duration=args.seconds)
            print(row(record[name]) + f"  ({name.replace('_', ' ')})", flush=True)

    record["offline_batch_16"] = offline.measure(args.model, "auto", [16], precision=precision)[16]
    capacity = record["capacity"]["images_per_s"]
    record["ratios"] = {
        "storm_goodput_over_capacity": round(record["storm"]["images_per_s"] / capacity, 3),
        "capacity_over_seed_design": round(capacity / record["seed_design"]["images_per_s"], 2),
        "capacity_over_litserve": round(capacity / record["litserve"]["images_per_s"], 2),
        "served_over_offline": round(capacity / record["offline_batch_16"], 3),
    }
    print(f"offline ({precision}), batch 16: {record['offline_batch_16']:.1f} img/s")
    print(json.dumps(record["ratios"]))
    if args.out:
        args.out.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
