"""The unit tier: no process, no socket, no network. A unit test that starts a process or opens a
socket fails here, at the call, with the name of what it tried."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Callable
from typing import Any

import pytest


def _refuse(what: str) -> Callable[..., Any]:
    def refused(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"a unit test may not {what}: move it to tests/integration or tests/e2e")

    return refused


@pytest.fixture(autouse=True)
def no_process_or_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(subprocess.Popen, "__init__", _refuse("start a process (subprocess)"))
    for name in ("fork", "forkpty", "posix_spawn", "posix_spawnp"):
        if hasattr(os, name):
            monkeypatch.setattr(os, name, _refuse(f"start a process (os.{name})"))
    for name in ("connect", "connect_ex", "bind", "listen"):
        monkeypatch.setattr(socket.socket, name, _refuse(f"open a network socket (socket.{name})"))
