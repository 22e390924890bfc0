"""Shared fixtures: a private BentoML home, real CIFAR-10 images, the registered default, and the
session's one shared `bentoml serve`. Each test's tier is its folder (tests/unit, tests/integration,
tests/e2e): the marker is set here, from the path, so it cannot drift."""

from __future__ import annotations

import os
import tempfile

# Before anything imports bentoml: every test run gets its own model store.
os.environ["BENTOML_HOME"] = tempfile.mkdtemp(prefix="pyramidnet-test-home-")
os.environ["BENTOML_DO_NOT_TRACK"] = "true"
# On pytest-xdist's workers (make test runs two), torch's math and what each test starts get one thread:
# two workers of two threads each on two cores run slower than one worker (the tests that measure time
# run alone, with every thread: marker `alone`).
if "PYTEST_XDIST_WORKER" in os.environ:
    os.environ["OMP_NUM_THREADS"] = "1"

import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import bentoml
import numpy as np
import openvino
import pytest

from model_store import Classifier, cifar10, load_classifier
from model_store.openvino_ir import ir_path
from model_store.registry import embedded_default, register

from .checkpoints import shipped_as_pth
from .servers import REPO, Server, start_server, stop_server

TIERS = ("unit", "integration", "e2e")
CIFAR10 = cifar10.default_source(REPO)  # CIFAR10_DIR, else ../shared/data/cifar10, else what `make data` fetches


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        tier = item.path.relative_to(REPO / "tests").parts[0]
        if tier not in TIERS:
            raise pytest.UsageError(f"{item.nodeid}: a test lives in one of tests/{{{','.join(TIERS)}}}/")
        item.add_marker(tier)


@pytest.fixture(scope="session")
def cifar10_dir() -> Path:
    """CIFAR-10 in this project's layout: the source itself, or made once from the official binary version."""
    if not CIFAR10.exists():
        pytest.fail(f"CIFAR-10 not found at {CIFAR10}: run `make data`, or set CIFAR10_DIR (README, Set-up)")
    return cifar10.layout(CIFAR10, REPO / cifar10.CACHE)


@pytest.fixture(scope="session")
def test_jpegs(cifar10_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 10,000 CIFAR-10 test JPEGs, unpacked: test/<class>/NNNN.jpg."""
    out = tmp_path_factory.mktemp("cifar10")
    with tarfile.open(cifar10_dir / "test-jpeg.tar.gz") as tar:
        tar.extractall(out, filter="data")
    return out / "test"


@pytest.fixture(scope="session")
def sample_jpegs(test_jpegs: Path) -> list[Path]:
    """Eight test JPEGs of each class, interleaved: 80 real images."""
    classes = sorted(p.name for p in test_jpegs.iterdir())
    return [test_jpegs / c / f"{i:04d}.jpg" for i in range(8) for c in classes]


@pytest.fixture(scope="session")
def training_data(cifar10_dir: Path, test_jpegs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A DATA folder for the scripts: train/ (the first 3 training images of each class) and test/ (all
    10,000 test images)."""
    root = tmp_path_factory.mktemp("cifar-train")
    with tarfile.open(cifar10_dir / "train-jpeg.tar.gz") as tar:
        wanted = [
            m for m in tar.getmembers() if m.isfile() and Path(m.name).name in {"0000.jpg", "0001.jpg", "0002.jpg"}
        ]
        tar.extractall(root, members=wanted, filter="data")
    (root / "test").symlink_to(test_jpegs)
    return root


@pytest.fixture(scope="session")
def exact_images(cifar10_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """The first 1,017 test images, pixel-exact: uint8 (1017, 32, 32, 3) and int64 labels."""
    data = np.load(cifar10_dir / "test-exact-first1017.npz")
    return data["images"], data["labels"]


@pytest.fixture(scope="session")
def default_model() -> bentoml.Model:
    return register(embedded_default())  # the trained PyramidNet-110 the package ships


@pytest.fixture(scope="session")
def training_jpegs(cifar10_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """30 CIFAR-10 training JPEGs of each class, unpacked: <class>/NNNN.jpg (int8 never sees a test image)."""
    root, taken = tmp_path_factory.mktemp("cifar10-train"), {}
    with tarfile.open(cifar10_dir / "train-jpeg.tar.gz") as tar:
        for member in tar:
            label = Path(member.name).parent.name
            if member.isfile() and taken.get(label, 0) < 30:
                taken[label] = taken.get(label, 0) + 1
                tar.extract(member, root, filter="data")
    return root / "train"


@pytest.fixture(scope="session")
def int8_model(tmp_path_factory: pytest.TempPathFactory, training_jpegs: Path) -> bentoml.Model:
    """The shipped weights registered as a user's checkpoint with `save_model.py --calibration-images`: NNCF's
    post-training int8, calibrated at registration (the embedded default ships its own int8 model)."""
    checkpoint = shipped_as_pth(
        tmp_path_factory.mktemp("user-checkpoint") / "best_pyramidnet_model.pth", epoch=120, best_val_acc=92.9
    )
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "save_model.py"),
            "--checkpoint",
            str(checkpoint),
            "--calibration-images",
            str(training_jpegs),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    model = bentoml.models.get(done.stdout.splitlines()[0])
    ir = openvino.Core().read_model(ir_path(model.path, "int8"))
    assert ir.get_rt_info(["pyramidnet", "calibrated_on"]).astype(str) == f"300 images: {training_jpegs}"
    return model


@pytest.fixture(scope="session")
def offline(default_model: bentoml.Model) -> Classifier:
    """The registered default loaded in this process: the reference the server must match."""
    return load_classifier(default_model, device="cpu")


@pytest.fixture(scope="session")
def server(default_model: bentoml.Model, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The service serving the registered default, as a user would run it."""
    # Generous shedding limits: these tests are about answers, not load shedding (the reliability
    # tests have their own server for that), and must not depend on the machine's speed.
    log = tmp_path_factory.mktemp("server") / "serve.log"
    srv = start_server(str(default_model.tag), log, max_latency_ms="20000", max_wait_s="60")
    yield srv
    stop_server(srv)


@pytest.fixture(scope="session")
def client(server: Server) -> Iterator[bentoml.SyncHTTPClient]:
    with bentoml.SyncHTTPClient(server.url, timeout=120) as c:
        yield c
