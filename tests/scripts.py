"""The project's scripts run as a user runs them: `python scripts/<name> ...`, output captured."""

from __future__ import annotations

import subprocess
import sys

from .servers import REPO


def script(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / name), *args], capture_output=True, text=True, timeout=900
    )
