"""What an install may leave out, and the one line that says how to add it.

`make serve` on a machine with no NVIDIA GPU installs the CPU serving path only: OpenVINO, no torch.
Torch comes with the `torch` extra (`make install-torch`), for what needs it: registering a .pth
checkpoint, training, the torch and ONNX backends, and serving on a GPU.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterator

INSTALL_TORCH = "make install-torch (or pip install -e '.[torch]')"


def has_torch() -> bool:
    """Whether torch is installed, without importing it (seconds of start-up on a CPU node)."""
    return importlib.util.find_spec("torch") is not None


def needs_torch(what: str) -> str:
    """The one line said where `what` needs torch and this install has none."""
    return f"{what} needs torch, which this install leaves out (serving on the CPU does not): run {INSTALL_TORCH}"


@contextlib.contextmanager
def torch_required(what: str) -> Iterator[None]:
    """Around the imports of a command that needs torch: where torch is missing, exit with the one line
    of `needs_torch` rather than a traceback."""
    try:
        yield
    except ModuleNotFoundError as e:
        if e.name != "torch":
            raise
        raise SystemExit(needs_torch(what)) from None
