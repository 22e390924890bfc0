"""The project's scripts and load tools run as a user runs them, output captured."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

from .servers import REPO


def script(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`python scripts/<name> ...`"""
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / name), *args], capture_output=True, text=True, timeout=900
    )


def locust(url: str, csv_prefix: Path, *args: str) -> dict[tuple[str, str], dict[str, str]]:
    """README's headless Locust run of locustfile.py against `url`; its stats rows by (type, name)."""
    command = [sys.executable, "-m", "locust", "-f", "locustfile.py", "--headless", "--host", url]
    done = subprocess.run(
        [*command, "--csv", str(csv_prefix), "--only-summary", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    with open(f"{csv_prefix}_stats.csv") as f:
        return {(row["Type"], row["Name"]): row for row in csv.DictReader(f)}
