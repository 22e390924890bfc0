"""What the end-to-end tests share: one quick training run, trained once a session."""

from __future__ import annotations

from pathlib import Path

import pytest

from ..scripts import script
from .recipes import QUICK_RUN


@pytest.fixture(scope="session")
def quick_run(training_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished train.py run of QUICK_RUN (its folder: model.pth, history.jsonl, summary.json): the whole run
    a run in pieces is compared with, and the weights QAT and a continuation start from. Read it, never write
    into it."""
    run = tmp_path_factory.mktemp("quick") / "run"
    trained = script("train.py", "--data", str(training_data), "--run", str(run), *QUICK_RUN)
    assert trained.returncode == 0, trained.stderr[-3000:]
    return run
