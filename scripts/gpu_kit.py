"""Pack what a lent GPU machine lacks, here, so that the GPU check and training run there with no preparation.

    python scripts/gpu_kit.py --data ../shared/data/cifar10

The GPU machine (docs/training.md#on-a-gpu) has Python 3.12 with PyTorch, NumPy and Pillow, and no network; a
call to it sends this checkout and the ignored paths it names, 64 MiB in all. The kit, in .gpu/ (ignored):

    site.tar.xz      the serving stack for that Python, at constraints.txt's versions, less OpenVINO and what the
                     machine's image holds (torch, NumPy, Pillow)
    openvino.tar.xz  OpenVINO with its CPU plugin and IR reader alone: the check needs it (the service, the
                     registry), training does not. Its GPU and NPU plugins and model importers are 80 MB that
                     nothing here loads, and would not fit in a call
    train.tar.xz     what training needs of them: pydantic. A training call carries this one, and room is left
                     for the run's state (22 MB) when a piece resumes
    bin/hey          the load generator of the served figure
    cifar10/         test-exact-first1017.npz, test-jpeg.tar.gz and train-jpeg.tar.gz
    kit.json         the two calls, each with the paths it carries and the MiB it sends

scripts/gpu.sh unpacks there what a call carried and runs a command with it. The kit prints both calls and their
sizes, and stops with an error where one would not fit. `--python-version 3.11` packs for this machine's Python
instead: a rehearsal of the kit on a machine without a GPU (docs/training.md#on-a-gpu).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import tomllib
from collections.abc import Callable
from pathlib import Path

from model_store import cifar10

REPO = Path(__file__).resolve().parents[1]
KIT = REPO / ".gpu"
LIMIT_MIB = 64  # what one call may send: the checkout and the paths it carries
PLATFORMS = ["manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64", "manylinux_2_5_x86_64"] + [
    f"manylinux_2_{n}_x86_64" for n in range(24, 36)
]
IMAGE_HOLDS = {"numpy", "pillow", "torch"}  # the machine's own, and what its torch was built against
# OpenVINO's files the service and the registry load: the runtime, its CPU plugin and the IR reader (the model
# importers under openvino/frontend/<format>/ and the GPU and NPU plugins are left out).
OPENVINO_LIBS = re.compile(
    r"lib(openvino|openvino_c|openvino_(intel_cpu|auto|auto_batch|hetero)_plugin|openvino_ir_frontend)\.so|tbb|hwloc"
)
# What training imports beyond the GPU machine's image: pydantic and its own (tests/integration/test_package.py
# holds train.py to it). The training call carries these alone.
TRAINING = {"pydantic", "pydantic_core", "annotated_types", "typing_inspection", "typing_extensions"}
FILES = ("test-exact-first1017.npz", "test-jpeg.tar.gz", "train-jpeg.tar.gz")
CALLS = {
    "check": [
        ".gpu/kit.json",
        ".gpu/site.tar.xz",
        ".gpu/openvino.tar.xz",
        ".gpu/bin",
        ".gpu/cifar10/test-exact-first1017.npz",
        ".gpu/cifar10/test-jpeg.tar.gz",
    ],
    "train": [".gpu/kit.json", ".gpu/train.tar.xz", ".gpu/cifar10"],
}


def requirements() -> list[str]:
    """The package's own dependencies, and what bench.gpu adds."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return [*project["dependencies"], "httpx"]


def name_of(wheel: Path) -> str:
    return wheel.name.split("-")[0].lower().replace("_", "-")


def pip(*args: str, python_version: str) -> None:
    platforms = [arg for platform in PLATFORMS for arg in ("--platform", platform)]
    target = ["--python-version", python_version, "--implementation", "cp", "--only-binary=:all:", *platforms]
    subprocess.run([sys.executable, "-m", "pip", *args, *target, "-q"], check=True)


def site(python_version: str, out: Path) -> None:
    """The site-packages folder for that Python, as `out`/site.tar.xz and `out`/openvino.tar.xz."""
    with tempfile.TemporaryDirectory() as scratch:
        wheels, folder = Path(scratch) / "wheels", Path(scratch) / "site"
        constraints = ["-c", str(REPO / "constraints.txt")]
        pip("download", "-d", str(wheels), *constraints, *requirements(), python_version=python_version)
        chosen = [str(w) for w in sorted(wheels.glob("*.whl")) if name_of(w) not in IMAGE_HOLDS]
        pip("install", "--no-deps", "--no-index", "--target", str(folder), *chosen, python_version=python_version)
        slim_openvino(folder / "openvino")
        for cache in list(folder.rglob("__pycache__")):
            shutil.rmtree(cache)
        pack(out / "openvino.tar.xz", folder, lambda name: top_level(name) in {"openvino", "openvino_telemetry"})
        pack(out / "site.tar.xz", folder, lambda name: top_level(name) not in {"openvino", "openvino_telemetry"})
        pack(out / "train.tar.xz", folder, lambda name: top_level(name) in TRAINING)


def top_level(entry: str) -> str:
    """The importable name a site-packages entry belongs to: `pydantic_core-2.1.dist-info` -> pydantic_core."""
    return entry.split("-")[0].removesuffix(".py").lower()


def slim_openvino(package: Path) -> None:
    """OpenVINO's package cut to what the service, the registry and training load: the runtime, its CPU plugin and
    the IR reader (tests/integration/test_gpu_readiness.py serves a model from what is left)."""
    for lib in (package / "libs").iterdir():
        if not OPENVINO_LIBS.search(lib.name):
            lib.unlink()
    for importer in (package / "frontend").iterdir():
        if importer.is_dir():
            shutil.rmtree(importer)


def pack(archive: Path, folder: Path, chosen: Callable[[str], bool]) -> None:
    """The top-level entries of `folder` that are `chosen`, as an xz tarball written whole or not at all."""
    part = archive.with_name(archive.name + ".part")
    with tarfile.open(part, "w:xz", preset=6) as tar:
        for entry in sorted(folder.iterdir()):
            if chosen(entry.name):
                tar.add(entry, arcname=entry.name)
    os.replace(part, archive)


def checkout_bytes() -> int:
    """What every call sends of the checkout: tracked files, and untracked ones git does not ignore."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout
    return sum((REPO / name).stat().st_size for name in listed.decode().split("\0") if name and (REPO / name).is_file())


def size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data", type=Path, required=True, help="CIFAR-10: this project's layout, or the official binary version"
    )
    parser.add_argument("--python-version", default="3.12", help="the GPU machine's Python (3.12)")
    args = parser.parse_args(argv)
    hey = shutil.which("hey")
    if hey is None:
        raise SystemExit("gpu_kit: hey is not installed here: apt-get install hey")
    data = cifar10.layout(args.data, REPO / cifar10.CACHE)
    (KIT / "bin").mkdir(parents=True, exist_ok=True)
    (KIT / "cifar10").mkdir(exist_ok=True)
    shutil.copy2(hey, KIT / "bin" / "hey")
    for name in FILES:
        shutil.copyfile(data / name, KIT / "cifar10" / name)  # not its mode: a read-only source stays replaceable
    site(args.python_version, KIT)

    tree = checkout_bytes()
    sent = {name: tree + sum(size(REPO / p) for p in carry if p != ".gpu/kit.json") for name, carry in CALLS.items()}
    calls = {name: {"carry": CALLS[name], "mib": round(total / 2**20, 1)} for name, total in sent.items()}
    (KIT / "kit.json").write_text(json.dumps({"python": args.python_version, "calls": calls}, indent=2) + "\n")
    archives = ("site.tar.xz", "openvino.tar.xz", "train.tar.xz")
    sizes = ", ".join(f"{name} {size(KIT / name) / 2**20:.1f} MiB" for name in archives)
    print(f"the checkout: {tree / 2**20:.1f} MiB; for Python {args.python_version}: {sizes}")
    for name, call in calls.items():
        print(f"{name}: {call['mib']} MiB of {LIMIT_MIB}, carry {json.dumps(call['carry'])}")
    too_large = [name for name, call in calls.items() if call["mib"] > LIMIT_MIB]
    if too_large:
        raise SystemExit(f"gpu_kit: error: the {' and '.join(too_large)} call would send more than {LIMIT_MIB} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
