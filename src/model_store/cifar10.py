"""CIFAR-10 as a user holds it, read one way: the official binary download, or this project's layout.

The tests, the benchmarks, training and evaluation read this project's layout: a folder with
`test-jpeg.tar.gz` and `train-jpeg.tar.gz` (`<split>/<class>/NNNN.jpg`, NNNN counting the images of
that class in the data set's order) and `test-exact-first1017.npz` (the first 1,017 test images'
original pixels). `layout(source, cache)` returns such a folder for any source:

- this project's layout (or a folder of `<split>/<class>/*.jpg`): the folder itself;
- the official binary version, `cifar-10-binary.tar.gz`, or the folder it unpacks to
  (`cifar-10-batches-bin/`, or a folder holding it): made once under `cache` from its pixels. Its
  records are read as bytes, no pickle: one label byte, then the 1,024 red, green and blue bytes of
  a 32x32 image, row by row. The JPEGs are written as the project's copies are (quality 75, 4:2:0
  chroma), so they are lossy copies of the originals like those, though not byte-equal to them.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from .spec import CIFAR10_CLASSES

SIDE = 32
RECORD = 1 + 3 * SIDE * SIDE  # label byte, then the red, green and blue planes
BATCHES = {"train": [f"data_batch_{i}.bin" for i in range(1, 6)], "test": ["test_batch.bin"]}
EXACT = "test-exact-first1017.npz"
EXACT_COUNT = 1017
JPEG_QUALITY = 75
CACHE = ".data"  # under a checkout: where `make data` downloads to and `layout` makes its folders


def default_source(repo: Path) -> Path:
    """Where the tests and benchmarks look without being told: CIFAR10_DIR, else this project's copy
    beside the clone (../shared/data/cifar10), else what `make data` downloads."""
    if named := os.environ.get("CIFAR10_DIR"):
        return Path(named)
    shared = repo.parent / "shared" / "data" / "cifar10"
    return shared if shared.is_dir() else repo / CACHE / "cifar-10-binary.tar.gz"


def is_layout(folder: Path) -> bool:
    """Whether `folder` is this project's layout (what `layout` makes)."""
    return all((folder / name).is_file() for name in ("test-jpeg.tar.gz", "train-jpeg.tar.gz", EXACT))


def holds_images(folder: Path) -> bool:
    """Whether `folder` holds images the way the scripts read them: `<split>/<class>/*.jpg`, or
    `<split>-jpeg.tar.gz`, for either split."""
    return any((folder / split).is_dir() or (folder / f"{split}-jpeg.tar.gz").is_file() for split in BATCHES)


def read_batch(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """One batch file of the binary version: uint8 (N, 32, 32, 3) RGB images and int64 labels."""
    if not data or len(data) % RECORD:
        raise ValueError(
            f"not a CIFAR-10 binary batch: {len(data)} bytes is not a whole number of {RECORD}-byte records"
        )
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, RECORD)
    labels = records[:, 0].astype(np.int64)
    if labels.max() >= len(CIFAR10_CLASSES):
        raise ValueError(
            f"not a CIFAR-10 binary batch: label {labels.max()} (there are {len(CIFAR10_CLASSES)} classes)"
        )
    images = records[:, 1:].reshape(-1, 3, SIDE, SIDE).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels


def read_binary(source: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Both splits of the binary version, from `cifar-10-binary.tar.gz` or the folder it unpacks to."""
    files: dict[str, bytes] = {}
    wanted = {name for names in BATCHES.values() for name in names}
    if source.is_file():
        with tarfile.open(source) as tar:
            for member in tar:
                if member.isfile() and Path(member.name).name in wanted and (file := tar.extractfile(member)):
                    files[Path(member.name).name] = file.read()
    else:
        folder = source / "cifar-10-batches-bin" if (source / "cifar-10-batches-bin").is_dir() else source
        files = {name: (folder / name).read_bytes() for name in wanted if (folder / name).is_file()}
    missing = sorted(wanted - files.keys())
    if missing:
        raise FileNotFoundError(f"{source}: not the CIFAR-10 binary version (no {', '.join(missing)})")
    splits = {}
    for split, names in BATCHES.items():
        parts = [read_batch(files[name]) for name in names]
        splits[split] = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    return splits


def layout(source: Path, cache: Path) -> Path:
    """This project's layout for `source`: itself, or made once under `cache` from the binary version
    (in a folder named after the source's size and first megabyte, written whole or not at all)."""
    source = source.resolve()
    if source.is_dir() and holds_images(source):
        return source
    if source.is_file() and source.name in {f"{split}-jpeg.tar.gz" for split in BATCHES}:
        return source.parent  # one archive of the layout, named instead of its folder
    if not source.exists():
        raise FileNotFoundError(f"{source}: no such file or folder")
    made = cache / f"cifar10-{_fingerprint(source)}"
    if is_layout(made):
        return made
    splits = read_binary(source)
    cache.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".cifar10-", dir=cache))
    try:
        for split, (images, labels) in splits.items():
            _write_jpegs(scratch / f"{split}-jpeg.tar.gz", split, images, labels)
        images, labels = splits["test"]
        np.savez(scratch / EXACT, images=images[:EXACT_COUNT], labels=labels[:EXACT_COUNT])
        _publish(scratch, made, is_layout)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return made


def unpacked_test_split(source: Path, cache: Path) -> Path:
    """The test images of `source` as files, `<class>/NNNN.jpg` (what evaluate.py and the folder
    classifier read): unpacked once under `cache` (the source itself may be read-only)."""
    folder = layout(source, cache)
    if (folder / "test").is_dir():
        return folder / "test"
    unpacked = cache / f"{folder.name}-{hashlib.sha256(str(folder).encode()).hexdigest()[:8]}-test"
    if not (unpacked / "test").is_dir():
        cache.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=".cifar10-test-", dir=cache))
        try:
            with tarfile.open(folder / "test-jpeg.tar.gz") as tar:
                tar.extractall(scratch, filter="data")
            _publish(scratch, unpacked, lambda folder: (folder / "test").is_dir())
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return unpacked / "test"


def _publish(scratch: Path, final: Path, complete: Callable[[Path], bool]) -> None:
    """`scratch`, finished, renamed to `final` in one step. Where another process (a second test worker, a
    script beside them) published first, its copy stays as it is: whoever reads it is never disturbed."""
    try:
        scratch.rename(final)
    except OSError:  # `final` is there, and not empty
        if complete(final):
            return
        shutil.rmtree(final)  # what an older version left: nothing reads it
        scratch.rename(final)


def _fingerprint(source: Path) -> str:
    """What tells two sources apart: their sizes and first megabytes."""
    digest = hashlib.sha256()
    paths = [source] if source.is_file() else sorted(p for p in source.rglob("*.bin") if p.is_file())
    for path in paths:
        with path.open("rb") as f:
            digest.update(f"{path.name}:{path.stat().st_size}:".encode() + f.read(2**20))
    return digest.hexdigest()[:16]


def _write_jpegs(archive: Path, split: str, images: np.ndarray, labels: np.ndarray) -> None:
    """`<split>/<class>/NNNN.jpg` in a .tar.gz, NNNN counting each class's images in order."""
    counts = [0] * len(CIFAR10_CLASSES)
    with tarfile.open(archive, "w:gz") as tar:
        for image, label in zip(images, labels, strict=True):
            out = io.BytesIO()
            Image.fromarray(image).save(out, format="JPEG", quality=JPEG_QUALITY)
            info = tarfile.TarInfo(f"{split}/{CIFAR10_CLASSES[label]}/{counts[label]:04d}.jpg")
            info.size = out.tell()
            out.seek(0)
            tar.addfile(info, out)
            counts[label] += 1
