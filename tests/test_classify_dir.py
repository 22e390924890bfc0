"""The folder classifier against a real server: every image accounted for, exact answers, resume."""

from __future__ import annotations

import csv
import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from model_store import CIFAR10_CLASSES, decode_image, preprocess_batch

pytestmark = pytest.mark.server
SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "classify_dir.py"


@pytest.fixture
def folder(tmp_path, sample_jpegs) -> Path:
    """80 CIFAR-10 JPEGs in nested folders, one named .txt, plus a truncated JPEG, a broken link
    and a text file."""
    root = tmp_path / "photos"
    for i, src in enumerate(sample_jpegs):
        dest = root / src.parent.name / ("deep" if i % 3 else "") / f"{i:03d}.jpg"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, dest)
    shutil.copy(sample_jpegs[0], root / "actually-a-jpeg.txt")
    (root / "cut.jpg").write_bytes(sample_jpegs[1].read_bytes()[:400])
    (root / "gone.jpg").symlink_to(root / "nowhere.jpg")
    (root / "notes.md").write_text("not an image\n")
    return root


def run(folder: Path, output: Path, url: str, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, str(SCRIPT), str(folder), "--url", url, "--output", str(output), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def rows(output: Path) -> list[dict]:
    return [json.loads(line) for line in output.read_text().splitlines()]


def test_every_image_appears_once_with_the_service_answer(server, offline, folder, tmp_path):
    output = tmp_path / "out.jsonl"
    process = run(folder, output, server.url)
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 1, stderr  # some inputs failed, and the exit code says so

    by_path = {r["path"]: r for r in rows(output)}
    assert len(by_path) == len(rows(output)) == 80 + 3  # 80 JPEGs, the .txt JPEG, the cut one, the link
    assert "notes.md" not in " ".join(by_path)  # not an image by its bytes: not an input
    assert by_path[str(folder / "cut.jpg")]["error"].startswith("INVALID_IMAGE")
    assert by_path[str(folder / "gone.jpg")]["error"].startswith("UNREADABLE")
    good = [p for p, r in by_path.items() if r["error"] is None]
    assert len(good) == 81 and str(folder / "actually-a-jpeg.txt") in good

    expected = offline.predict_proba(preprocess_batch([decode_image(Path(p), max_pixels=10**6) for p in good], offline.spec))
    served = np.array([[by_path[p]["probabilities"][c] for c in CIFAR10_CLASSES] for p in good])
    assert np.abs(served - expected).max() < 1e-5
    assert "classified 81" in stderr and "1 failed, 1 unreadable" in stderr


def test_an_interrupted_run_resumes_without_reclassifying(server, folder, tmp_path):
    output = tmp_path / "out.csv"
    first = run(folder, output, server.url, "--batch-size", "2", "--concurrency", "1")
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and (not output.exists() or output.read_text().count("\n") < 12):
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait()
    done_before = output.read_text().count("\n") - 1  # minus the header
    assert 0 < done_before < 83

    second = run(folder, output, server.url)
    _, stderr = second.communicate(timeout=600)
    paths = [row["path"] for row in csv.DictReader(output.read_text().splitlines())]
    assert len(paths) == len(set(paths)) == 83, "an image is missing or was classified twice"
    resumed = re.search(r"; (\d+) already in", stderr)
    assert resumed and int(resumed[1]) > 0, stderr
