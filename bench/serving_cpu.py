"""Where a `/classify` request's CPU goes, per serving configuration: the evidence for the API worker
and batching defaults.

    python -m bench.serving_cpu                  # shipped settings against an API worker per core: about 3 minutes
    python -m bench.serving_cpu --configs "" "PYRAMIDNET_MAX_BATCH_SIZE=32" --rounds 2
    git worktree add ../before e525c70 && python -m bench.serving_cpu --configs "" "checkout=../before"

A configuration is environment settings over the shipped ones, `NAME=VALUE` separated by spaces
(empty: the shipped settings); `checkout=PATH` serves an earlier checkout instead of this one. For
each configuration in turn, `--rounds` times (alternating, so that the machine's drift hits each
alike): a fresh `bentoml serve`, 2 s of warm-up, then `--clients` closed-loop `hey` clients on
`/classify` for `--seconds`. Prints img/s, p99, the mean forward pass (images, from the runner's
metric), and the CPU each request cost by role: API workers, runner, load generator, and the share
of the cores nobody used. A figure, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from model_store import DEFAULT_MODEL_NAME

from .harness import REPO, batch_counters, command, cpu_seconds, free_port, hey_cpu_seconds, serving
from .hey import DATA_HELP, jpeg_archive, load_images, run_level

ROLES = ("api", "runner", "load generator", "idle")


def parse(spec: str) -> tuple[Path, dict[str, str]]:
    """`"checkout=../before PYRAMIDNET_API_WORKERS=2"` -> (checkout, environment)."""
    pairs = dict(item.split("=", 1) for item in spec.split())
    return Path(pairs.pop("checkout", REPO)).resolve(), pairs


def measure(spec: str, images: list[bytes], args: argparse.Namespace, logs: Path) -> dict:
    checkout, env = parse(spec)
    port = free_port()
    log = logs / f"serve-{port}.log"
    with serving(command("service", port), port, {"PYRAMIDNET_MODEL": args.model, **env}, log, checkout) as (
        url,
        group,
    ):
        run_level(url, images, args.clients, duration=2, warmup=0)
        batches, cpu, load = batch_counters(url), cpu_seconds(group), hey_cpu_seconds()
        start = time.perf_counter()
        level = run_level(url, images, args.clients, duration=args.seconds, warmup=0)
        elapsed = time.perf_counter() - start
        used = {role: seconds - cpu.get(role, 0.0) for role, seconds in cpu_seconds(group).items()}
        used["load generator"] = hey_cpu_seconds() - load
        formed, passes = (after - before for after, before in zip(batch_counters(url), batches, strict=True))
    used["idle"] = max(0.0, len(os.sched_getaffinity(0)) * elapsed - sum(used.values()))
    requests = level["requests"]
    return {
        "config": spec or "shipped",
        "images_per_s": level["images_per_s"],
        "p99_ms": level["p99_ms"],
        "codes": level["codes"],
        "images_per_forward": round(formed / passes, 2) if passes else None,
        "cpu_ms_per_request": {role: round(used.get(role, 0.0) / requests * 1000, 2) for role in ROLES},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=f"{DEFAULT_MODEL_NAME}:latest")
    parser.add_argument("--configs", nargs="+", default=["", f"PYRAMIDNET_API_WORKERS={len(os.sched_getaffinity(0))}"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--data", type=Path, help=DATA_HELP)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    images = load_images(jpeg_archive(args.data))
    rows = []
    print(f"{args.clients} hey clients on /classify, {args.seconds:g} s; CPU ms per request by role\n")
    print(f"| configuration | img/s | p99 ms | images per forward | {' | '.join(ROLES)} |")
    print("| --- |" + " ---: |" * (3 + len(ROLES)))
    with tempfile.TemporaryDirectory(prefix="bench-logs-") as logs:
        for _ in range(args.rounds):
            for spec in args.configs:
                r = measure(spec, images, args, Path(logs))
                rows.append(r)
                cpu = " | ".join(f"{r['cpu_ms_per_request'][role]:.2f}" for role in ROLES)
                print(
                    f"| {r['config']} | {r['images_per_s']:.0f} | {r['p99_ms']:.0f} "
                    f"| {r['images_per_forward']} | {cpu} |",
                    flush=True,
                )
    print(
        "\nmedian img/s: "
        + ", ".join(
            f"{name} {statistics.median(r['images_per_s'] for r in rows if r['config'] == name):.0f}"
            for name in (spec or "shipped" for spec in args.configs)
        )
    )
    if args.out:
        args.out.write_text(
            json.dumps({"clients": args.clients, "seconds": args.seconds, "runs": rows}, indent=2) + "\n"
        )


if __name__ == "__main__":
    main()
