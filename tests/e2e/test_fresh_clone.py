"""A user's clone: no ../shared beside it, CIFAR10_DIR unset, an empty model store. README's first
command (`make serve`) installs, registers the embedded default and serves; README's curl examples
and its load test (`make loadtest`) then run as written from the clone's folder, on the sample
images the repository carries; `make test` says in one line where the data it needs is, and `make data`
what to do where it cannot download it."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from ..servers import REPO, free_port


@dataclass(frozen=True)
class Clone:
    path: Path
    env: dict[str, str]

    def make(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["make", *args], cwd=self.path, env=self.env, capture_output=True, text=True, timeout=timeout
        )


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Clone:
    """`git clone` of this repository's committed state, alone in a folder: nothing beside it."""
    root = tmp_path_factory.mktemp("user")
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(root / "clone")], check=True, timeout=120)
    # A user's shell: no data set named, no venv active, not inside another make (CI runs pytest from one).
    left_out = ("CIFAR10_DIR", "VIRTUAL_ENV", "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")
    env = {k: v for k, v in os.environ.items() if k not in left_out}
    env["BENTOML_HOME"] = str(root / "bentoml")  # an empty model store: the user's first
    assert not (root / "shared").exists()
    return Clone(root / "clone", env)


@pytest.fixture(scope="module")
def served(clone: Clone) -> Iterator[str]:
    """README's first command, on a free port; stopped with its whole process group."""
    port = free_port()
    log = (clone.path.parent / "serve.log").open("w")
    process = subprocess.Popen(
        ["make", "serve", f"PORT={port}"],
        cwd=clone.path,
        env=clone.env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 900  # a new venv first
        while True:
            try:
                if httpx.get(url + "/readyz", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None, (clone.path.parent / "serve.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "make serve never became ready"
            time.sleep(1)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=120)


def readme_section(title: str) -> str:
    readme = (REPO / "README.md").read_text()
    return readme.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_readmes_curl_examples_run_as_written_in_the_clone(clone, served):
    lines = [
        line.split("  #")[0].strip()
        for block in re.findall(r"```bash\n(.*?)```", readme_section("Calling it"), re.DOTALL)
        for line in block.splitlines()
        if line.startswith("curl ")
    ]
    assert len(lines) >= 4
    answers = []
    for line in lines:
        done = subprocess.run(
            line.replace("http://127.0.0.1:3000", served),
            shell=True,
            cwd=clone.path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, (line, done.stderr)
        answers.append(json.loads(done.stdout))
    one, batch, info, refused = answers
    assert one["label"] == "cat"
    assert [r["label"] for r in batch] == ["ship", "frog"]
    assert info["trained"] is True
    assert refused["error"]["code"] == "INVALID_IMAGE"


def test_readmes_load_test_runs_from_the_serving_venv(clone, served):
    """`make loadtest` adds Locust to make serve's venv and drives the server with the sample images."""
    block = re.findall(r"```bash\n(.*?)```", readme_section("Load test"), re.DOTALL)[0]
    assert block.split("#")[0].split() == ["make", "loadtest"]
    port = served.rsplit(":", 1)[1]
    done = clone.make("loadtest", f"PORT={port}", "DURATION=5s", timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    with (clone.path / "results" / "locust_stats.csv").open() as f:
        rows = {(r["Type"], r["Name"]): r for r in csv.DictReader(f)}
    answered = rows[("POST", "/classify")]
    assert int(answered["Request Count"]) > 0
    assert int(rows[("", "Aggregated")]["Failure Count"]) == 0


def test_make_test_says_in_one_line_where_the_data_is(clone):
    """Before installing anything: no data, no 2 GB of dev tools."""
    started = time.monotonic()
    done = clone.make("test", timeout=120)
    assert done.returncode != 0
    assert time.monotonic() - started < 30
    (line,) = [line for line in done.stderr.splitlines() if not re.match(r"make(\[\d+\])?: ", line)]
    assert "CIFAR10_DIR" in line
    assert not (clone.path / ".venv" / ".dev").exists()


def test_make_data_says_in_one_line_what_to_do_where_it_cannot_download(clone):
    """Here no network reaches the data set's host: a closed port on loopback stands for it."""
    done = clone.make("data", "CIFAR10_URL=http://127.0.0.1:9/cifar-10-binary.tar.gz", timeout=120)
    assert done.returncode != 0
    (line,) = [line for line in done.stderr.splitlines() if not re.match(r"make(\[\d+\])?: ", line)]
    assert line.startswith("make data: ")
    assert "CIFAR10_DIR" in line
    assert not list((clone.path / ".data").glob("*"))  # nothing half-downloaded left behind
