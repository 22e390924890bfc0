"""The whole benchmark in one run: offline backends, the seed-design baseline, the BentoML service.

    python -m bench.harness                              # about 13 minutes on 2 cores
    python -m bench.harness --skip-backends compile      # leave out the two-minute compile
    python -m bench.harness --out /tmp/perf --duration 5

1. offline: `Classifier.predict_proba` images/s per backend at fp32 and batch size, and of the
   served backend at its precision when that is not fp32 (bench/offline.py);
2. the baseline (bench/baseline_app.py: FastAPI + uvicorn, eager forward in the event loop, one
   request at a time) and then the service (`bentoml serve`, shipped settings) under the same
   closed-loop load (`hey`, bench/hey.py) at each concurrency, on `/classify` (one image a request)
   and `/classify_batch` (`--images-per-request` images), same model, same JPEGs;
3. for the service, the batch sizes the runner formed at each level, from /metrics.

Each design serves each endpoint from a fresh start. Only the service's admission limit and
batcher budget are raised, above the most images the load ever has in flight, so that both
designs queue everything and the figures compare like with like (the shipped limits shed the
excess with 503 instead: docs/operations.md). Prints the table and writes
record.json, record.csv and performance.png under `--out`; docs/performance.md reads them.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import platform
import re
import resource
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

import httpx
import numpy as np

from model_store import DEFAULT_MODEL_NAME, Settings, get_model
from model_store.bentoml_internals import cpu_budget, is_service_worker
from model_store.inference import choose
from model_store.loading import device_type
from model_store.options import BACKENDS

from . import offline
from .hey import DATA_HELP, HEADER, REPO, jpeg_archive, load_images, row, run_level

ENDPOINTS = ("/classify", "/classify_batch")
BATCH_METRIC = r"pyramidnet_batch_images_(sum|count)(?:\{[^}]*\})? (\S+)"


# How each design is started (`python -m ...`), all on the model in PYRAMIDNET_MODEL: the service,
# the seed design the issues started from, and LitServe serving the same weights eagerly.
DESIGNS = {
    "service": ["bentoml", "serve", "service:PyramidNetClassifier"],
    "seed_design": ["uvicorn", "bench.baseline_app:app", "--log-level", "warning"],
    "litserve": ["bench.litserve_app"],
}


def command(design: str, port: int) -> list[str]:
    return [sys.executable, "-m", *DESIGNS[design], "--port", str(port)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(root: int) -> dict[str, float]:
    """CPU seconds used so far by a server process and all its descendants, by role (Linux /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    processes = {}  # pid -> (parent, seconds, command line)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes().decode(errors="replace")
        except (OSError, IndexError):
            continue  # the process ended meanwhile
        processes[int(stat.parent.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / ticks, cmdline)
    tree, grew = {root}, True
    while grew:
        children = {pid for pid, (parent, _, _) in processes.items() if parent in tree} - tree
        tree |= children
        grew = bool(children)
    out: dict[str, float] = {}
    for pid in tree & processes.keys():
        _, seconds, cmdline = processes[pid]
        role = "runner" if "pyramidnet_runner" in cmdline else "api" if is_service_worker(cmdline) else "server"
        out[role] = out.get(role, 0.0) + seconds
    return out


@contextmanager
def serving(cmd: list[str], port: int, env: dict[str, str], log: Path, checkout: Path = REPO):
    """Start a server from `checkout` (this one, or e.g. a git worktree of an earlier commit, whose
    own code it then imports), wait for /readyz, yield (URL, process group), stop it and its workers."""
    if checkout != REPO:
        env = {**env, "PYTHONPATH": f"{checkout / 'src'}:{checkout}"}
    with log.open("wb") as out:
        process = subprocess.Popen(
            cmd, cwd=checkout, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600
        while not _ready(url):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{cmd[2]} did not become ready; see {log}")
            time.sleep(0.1)  # ready times are reported to a tenth of a second
        yield url, process.pid
    finally:
        os.killpg(process.pid, 15)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)


def _ready(url: str) -> bool:
    try:
        return httpx.get(url + "/readyz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def batch_counters(url: str) -> tuple[float, float]:
    """(images, batches) the runner has formed so far."""
    found = dict(re.findall(BATCH_METRIC, httpx.get(url + "/metrics", timeout=10).text))
    return float(found.get("sum", 0)), float(found.get("count", 0))


def load_endpoint(
    design: str, endpoint: str, server: tuple[str, int], images: list[bytes], args: argparse.Namespace
) -> list[dict]:
    url, group = server
    per_request = 1 if endpoint == "/classify" else args.images_per_request
    rows = []
    for level in args.concurrency:
        before = batch_counters(url) if design == "bentoml" else None
        cpu_before, start = {**cpu_seconds(group), "load generator": hey_cpu_seconds()}, time.perf_counter()
        r = run_level(url, images, level, endpoint=endpoint, per_request=per_request, duration=args.duration)
        cpu_after = {**cpu_seconds(group), "load generator": hey_cpu_seconds()}
        elapsed = time.perf_counter() - start
        # Cores busy per role over the level (warm-up included): 2.0 is the whole 2-core machine.
        r["cores_busy"] = {k: round((v - cpu_before.get(k, 0.0)) / elapsed, 2) for k, v in cpu_after.items()}
        r["design"], r["mean_batch_size"] = design, None
        if before is not None:
            batched, passes = (a - b for a, b in zip(batch_counters(url), before, strict=True))
            r["mean_batch_size"] = batched / passes if passes else None
        rows.append(r)
        batch = f"  batch {r['mean_batch_size']:.1f}" if r["mean_batch_size"] else ""
        print(f"{design:<9}" + row(r) + batch + f"  cores {r['cores_busy']}", flush=True)
    return rows


def hey_cpu_seconds() -> float:
    """CPU seconds of the finished `hey` runs (this process's waited-for children)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def runs_on(device, backend: str) -> bool:
    try:
        choose(device, backend)
    except ValueError:
        return False  # a CPU-only runtime on a GPU machine
    return True


def environment(args: argparse.Namespace, settings: Settings) -> dict:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    versions = {name: _version(name) for name in ("torch", "bentoml", "openvino", "onnxruntime", "fastapi", "uvicorn")}
    device = device_type(settings.device)
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(), "device": str(device)},
        "versions": {"python": platform.python_version(), **versions},
        "model": str(get_model(args.model).tag),
        "backend": dict(
            zip(("backend", "precision"), choose(device, settings.backend, settings.precision), strict=True)
        ),
        "settings": {
            "max_batch_size": settings.max_batch_size,
            "max_latency_ms": settings.max_latency_ms,
            "api_workers": settings.api_worker_count(cpu_budget()),
        },
        "load": {
            "concurrency": args.concurrency,
            "duration_s": args.duration,
            "images_per_request": args.images_per_request,
            "data": str(args.data),
        },
    }


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def offline_name(backend: str, precision: str) -> str:
    """The offline table's row name: the backend, and its precision unless fp32."""
    return backend if precision == "fp32" else f"{backend} {precision}"


def summarise(record: dict) -> dict:
    """The headline ratios: service over baseline, and served over offline (the served backend and
    precision) at the batch size formed."""
    served = {(r["design"], r["endpoint"], r["concurrency"]): r for r in record["served"]}
    best_offline = record["offline"][record["offline_reference"]]
    sizes = sorted(int(n) for n in best_offline)

    def offline_at(batch: float) -> float:  # interpolated between the batch sizes measured
        return float(np.interp(batch, sizes, [best_offline[str(n)] for n in sizes]))

    out = {}
    for endpoint in ENDPOINTS:
        for c in record["load"]["concurrency"]:
            ours, base = served[("bentoml", endpoint, c)], served[("baseline", endpoint, c)]
            key = f"{endpoint} c={c}"
            out[key] = {
                "speedup": ours["images_per_s"] / base["images_per_s"],
                "served_over_offline": ours["images_per_s"] / offline_at(ours["mean_batch_size"] or 1),
            }
    return out


def write(record: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "record.json").write_text(json.dumps(record, indent=2) + "\n")
    fields = [
        "design",
        "endpoint",
        "concurrency",
        "images_per_request",
        "ok_per_s",
        "images_per_s",
        "p50_ms",
        "p95_ms",
        "p99_ms",
        "mean_batch_size",
        "requests",
        "codes",
        "cores_busy",
    ]
    with (out / "record.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fields, extrasaction="ignore")
        writer.writeheader()
        for r in record["served"]:
            writer.writerow({**r, "codes": json.dumps(r["codes"]), "cores_busy": json.dumps(r.get("cores_busy"))})
    (out / "tables.md").write_text(markdown(record))
    plot(record, out / "performance.png")


def markdown(record: dict) -> str:
    """The record's tables in Markdown, as docs/performance.md shows them."""
    sizes = list(next(iter(record["offline"].values())))
    lines = ["| backend | " + " | ".join(f"batch {n}" for n in sizes) + " |", "| --- |" + " ---: |" * len(sizes)]
    for backend, figures in record["offline"].items():
        lines.append(f"| {backend} | " + " | ".join(f"{figures[n]:.0f}" for n in sizes) + " |")
    lines += [
        "",
        "| endpoint | clients | seed design img/s | p99 ms | service img/s | p99 ms | batch formed |"
        " speed-up | served / offline | service codes |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    served = {(r["design"], r["endpoint"], r["concurrency"]): r for r in record["served"]}
    for endpoint in ENDPOINTS:
        for c in record["load"]["concurrency"]:
            base, ours = served[("baseline", endpoint, c)], served[("bentoml", endpoint, c)]
            s = record["summary"][f"{endpoint} c={c}"]
            codes = ", ".join(f"{n} × {code}" for code, n in ours["codes"].items())
            lines.append(
                f"| `{endpoint}` | {c} | {base['images_per_s']:.1f} | {base['p99_ms']:.0f} | "
                f"{ours['images_per_s']:.1f} | {ours['p99_ms']:.0f} | {ours['mean_batch_size'] or 0:.1f} | "
                f"{s['speedup']:.2f}× | {s['served_over_offline']:.0%} | {codes} |"
            )
    roles = ("runner", "api", "server", "load generator")
    lines += [
        "",
        "| endpoint | clients | " + " | ".join(roles) + " | all |",
        "| --- | ---: |" + " ---: |" * (len(roles) + 1),
    ]
    for r in record["served"]:
        if r["design"] == "bentoml":
            busy = r["cores_busy"]
            lines.append(
                f"| `{r['endpoint']}` | {r['concurrency']} | "
                + " | ".join(f"{busy.get(k, 0):.2f}" for k in roles)
                + f" | {sum(busy.values()):.2f} |"
            )
    return "\n".join(lines) + "\n"


def plot(record: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for design, style in (("bentoml", "-o"), ("baseline", "--s")):
        for endpoint in ENDPOINTS:
            rows = [r for r in record["served"] if r["design"] == design and r["endpoint"] == endpoint]
            c = [r["concurrency"] for r in rows]
            label = f"{'BentoML service' if design == 'bentoml' else 'seed design'} {endpoint}"
            left.plot(c, [r["images_per_s"] for r in rows], style, label=label)
            right.plot(c, [r["p99_ms"] for r in rows], style, label=label)
    reference = record["offline_reference"]
    left.axhline(max(record["offline"][reference].values()), color="grey", lw=0.8, ls=":")
    left.text(
        record["load"]["concurrency"][0],
        max(record["offline"][reference].values()),
        f" offline best ({reference})",
        va="bottom",
        fontsize=8,
        color="grey",
    )
    left.set(xscale="log", xlabel="concurrent clients", ylabel="images / s", title="Throughput")
    right.set(xscale="log", yscale="log", xlabel="concurrent clients", ylabel="p99 latency (ms)", title="p99 latency")
    for ax in (left, right):
        ax.set_xticks(record["load"]["concurrency"], [str(c) for c in record["load"]["concurrency"]])
        ax.grid(alpha=0.3)
    right.legend(fontsize=8)
    fig.suptitle(f"{record['machine']['cpu']}, {record['machine']['cores']} cores, {record['date'][:10]}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=f"{DEFAULT_MODEL_NAME}:latest")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per level")
    parser.add_argument("--images-per-request", type=int, default=16, help="for /classify_batch")
    parser.add_argument("--skip-backends", nargs="*", default=[], choices=BACKENDS)
    parser.add_argument("--data", type=Path, help=DATA_HELP)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "performance")
    args = parser.parse_args()

    settings = Settings()
    record = environment(args, settings)
    print(json.dumps({k: record[k] for k in ("machine", "versions", "model", "backend", "settings")}))

    print("\noffline images/s per batch size")
    record["offline"] = {}
    device = device_type(settings.device)
    runs = [(b, "fp32") for b in BACKENDS if b not in args.skip_backends and runs_on(device, b)]
    served = record["backend"]["backend"], record["backend"]["precision"]  # what served / offline divides by
    record["offline_reference"] = offline_name(*served)
    for backend, precision in runs + ([served] if served not in runs else []):
        figures = offline.measure(args.model, backend, offline.BATCH_SIZES, precision=precision)
        record["offline"][offline_name(backend, precision)] = {str(n): v for n, v in figures.items()}
        print(
            f"{offline_name(backend, precision):<14}" + "".join(f"{n:>6}: {v:>6.1f}" for n, v in figures.items()),
            flush=True,
        )

    images = load_images(jpeg_archive(args.data))
    env = {"PYRAMIDNET_MODEL": record["model"]}
    # Both designs queue everything: the service's admission limit and batcher budget are raised
    # above the most the load ever has in flight (the baseline has neither).
    service_env = {**env, "PYRAMIDNET_MAX_WAIT_S": "600", "PYRAMIDNET_MAX_LATENCY_MS": "120000"}
    record["load"]["service_overrides"] = {k: v for k, v in service_env.items() if k != "PYRAMIDNET_MODEL"}
    record["served"] = []
    logs = Path(tempfile.mkdtemp(prefix="bench-logs-"))
    print("\n" + f"{'design':<9}" + HEADER)
    for design in ("baseline", "bentoml"):
        for endpoint in ENDPOINTS:  # a fresh server each: the batcher's learned wait carries over otherwise
            port = free_port()
            cmd = command("seed_design" if design == "baseline" else "service", port)
            log = logs / f"{design}{endpoint.replace('/', '-')}.log"
            with serving(cmd, port, env if design == "baseline" else service_env, log) as server:
                record["served"] += load_endpoint(design, endpoint, server, images, args)

    record["summary"] = summarise(record)
    print("\nspeed-up over the seed design, and served / offline at the batch size formed")
    for key, s in record["summary"].items():
        print(f"{key:<22} {s['speedup']:>5.2f}x  {s['served_over_offline']:>6.1%}")
    write(record, args.out)
    print(f"\nwrote {args.out}/record.json, record.csv, tables.md, performance.png")


if __name__ == "__main__":
    main()
