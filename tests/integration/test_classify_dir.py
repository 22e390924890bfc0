"""The folder classifier against a real server: every image accounted for, exact answers, resume."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from model_store import CIFAR10_CLASSES, decode_image, preprocess_batch

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "classify_dir.py"


@pytest.fixture
def folder(tmp_path, sample_jpegs) -> Path:
    """80 CIFAR-10 JPEGs in nested folders, one named .txt, plus a truncated JPEG, a broken link,
    a text file named .jpg and a text file."""
    root = tmp_path / "photos"
    for i, src in enumerate(sample_jpegs):
        dest = root / src.parent.name / ("deep" if i % 3 else "") / f"{i:03d}.jpg"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, dest)
    shutil.copy(sample_jpegs[0], root / "actually-a-jpeg.txt")
    (root / "cut.jpg").write_bytes(sample_jpegs[1].read_bytes()[:400])
    (root / "gone.jpg").symlink_to(root / "nowhere.jpg")
    (root / "fake.jpg").write_text("a text file named like an image\n")
    (root / "notes.md").write_text("not an image\n")
    return root


def run(folder: Path, output: Path, url: str, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), str(folder), "--url", url, "--output", str(output), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def rows(output: Path) -> list[dict]:
    return [json.loads(line) for line in output.read_text().splitlines()]


def test_every_image_appears_once_with_the_service_answer(server, offline, folder, tmp_path):
    output = tmp_path / "out.jsonl"
    process = run(folder, output, server.url)
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 1, stderr  # some inputs failed, and the exit code says so

    by_path = {r["path"]: r for r in rows(output)}
    assert len(by_path) == len(rows(output)) == 80 + 4  # 80 JPEGs, the .txt JPEG, the cut one, the link, fake.jpg
    assert "notes.md" not in " ".join(by_path)  # an image neither by its bytes nor by its name: not an input
    assert by_path[str(folder / "cut.jpg")]["error"].startswith("INVALID_IMAGE")
    assert by_path[str(folder / "fake.jpg")]["error"].startswith("INVALID_IMAGE")
    assert by_path[str(folder / "gone.jpg")]["error"].startswith("UNREADABLE")
    good = [p for p, r in by_path.items() if r["error"] is None]
    assert len(good) == 81
    assert str(folder / "actually-a-jpeg.txt") in good

    expected = offline.predict_proba(
        preprocess_batch([decode_image(Path(p), max_pixels=10**6) for p in good], offline.spec)
    )
    served = np.array([[by_path[p]["probabilities"][c] for c in CIFAR10_CLASSES] for p in good])
    assert np.abs(served - expected).max() < 1e-5
    assert "classified 81" in stderr
    assert "2 failed, 1 unreadable" in stderr


def test_an_interrupted_run_resumes_without_reclassifying(server, folder, tmp_path):
    output = tmp_path / "out.csv"
    first = run(folder, output, server.url, "--batch-size", "2", "--concurrency", "1")
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and (not output.exists() or output.read_text().count("\n") < 12):
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait()
    done_before = output.read_text().count("\n") - 1  # minus the header
    assert 0 < done_before < 84

    second = run(folder, output, server.url)
    _, stderr = second.communicate(timeout=600)
    paths = [row["path"] for row in csv.DictReader(output.read_text().splitlines())]
    assert len(paths) == len(set(paths)) == 84, "an image is missing or was classified twice"
    resumed = re.search(r"; (\d+) already in", stderr)
    assert resumed, stderr
    assert int(resumed[1]) > 0, stderr


def test_a_wrong_url_fails_at_once_without_spinning(folder, tmp_path):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
    process = run(folder, tmp_path / "out.csv", url)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 2
    assert f"cannot reach the service at {url}" in stderr
    assert "Traceback" not in stderr


def test_a_server_that_never_answers_fails_after_the_wait_not_forever(folder, tmp_path):
    with socket.socket() as listener:  # accepts connections, never answers: a server stuck starting
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        process = run(folder, tmp_path / "out.csv", url, "--wait-ready", "6")
        _, status, usage = os.wait4(process.pid, 0)
    stderr = process.stderr.read()
    assert os.waitstatus_to_exitcode(status) == 2
    assert "is not ready after 6 s" in stderr
    assert "Traceback" not in stderr
    assert usage.ru_utime + usage.ru_stime < 4  # it waited; a busy loop burns a core for the whole wait
