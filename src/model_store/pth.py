"""Reading PyTorch's checkpoint files (.pth) safely: both seed formats, never arbitrary unpickling.
Needs torch, as registering a .pth does; the embedded default is registered without it."""

from __future__ import annotations

import hashlib
import io
import pickle
import pickletools
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch._weights_only_unpickler import _get_allowed_globals
from torch.serialization import get_safe_globals

from .checkpoint import Checkpoint, CheckpointError, listing, strip_wrapper_prefixes

_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTO = 0x80


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint that could only be read by running code from the file."""


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Load a raw state_dict or a `{"model_state_dict": ..., "epoch": ..., "best_val_acc": ...}` dict."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e.strerror or e}") from None
    return parse_checkpoint(data, source=str(path))


def parse_checkpoint(data: bytes, *, source: str = "<bytes>") -> Checkpoint:
    """The same as `read_checkpoint`, for bytes already in memory."""
    obj = _safe_load(data, source)
    metadata: Mapping[str, Any] = {}
    if isinstance(obj, Mapping) and "model_state_dict" in obj:
        metadata, obj = obj, obj["model_state_dict"]
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(
            f"{source} holds neither a state_dict nor a dict with 'model_state_dict' (found {type(obj).__name__})"
        )
    non_tensors = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if non_tensors:
        raise CheckpointError(f"{source}: state_dict entries that are not tensors: {listing(non_tensors)}")
    try:
        arrays = {k: _array(v) for k, v in obj.items()}
    except (TypeError, RuntimeError) as e:  # a dtype numpy has no counterpart for (quantized, complex...)
        raise CheckpointError(f"{source}: a tensor that is not plain numbers ({_first_line(e)})") from None
    return Checkpoint(
        state_dict=strip_wrapper_prefixes(arrays),
        sha256=hashlib.sha256(data).hexdigest(),
        source=source,
        epoch=_optional_number(metadata.get("epoch"), int),
        best_val_acc=_optional_number(metadata.get("best_val_acc"), float),
    )


def _array(tensor: torch.Tensor) -> np.ndarray:
    """A tensor's values on the CPU; floating ones as float32 (numpy has no bfloat16, and the network
    runs float32 weights whatever they were saved in)."""
    tensor = tensor.detach().cpu()
    return (tensor.float() if tensor.is_floating_point() else tensor).numpy()


def _safe_load(data: bytes, source: str) -> Any:
    if not data:
        raise CheckpointError(f"{source} is empty")
    if not (data.startswith(_ZIP_MAGIC) or data[0] == _PICKLE_PROTO):
        raise CheckpointError(f"{source} is not a PyTorch checkpoint (unrecognised header {data[:8]!r})")
    if data[0] == _PICKLE_PROTO and (unsafe := _disallowed_globals(data)):
        # torch's own refusal of a raw pickle at protocol 4 or 5 stops at an opcode it does not
        # support ("Unsupported operand 149") before it reaches, and names, the global.
        raise _unsafe(source, f"it imports {listing(unsafe)}")
    try:
        with warnings.catch_warnings():  # torch warns about protocols > 2 before refusing or reading them
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # weights_only refuses any global outside torch's allow-list; name it and stop.
        # Retrying with weights_only=False would run whatever the file asks for.
        cause = str(e.__context__ or e)
        if "GLOBAL" in cause:
            raise _unsafe(source, cause.strip()) from None
        raise CheckpointError(f"{source} is not a readable PyTorch checkpoint ({cause.strip()})") from None
    except (RuntimeError, EOFError, KeyError, ValueError, IndexError, OSError) as e:
        raise CheckpointError(f"{source} is truncated or corrupt ({type(e).__name__}: {_first_line(e)})") from None


def _unsafe(source: str, why: str) -> UnsafeCheckpointError:
    return UnsafeCheckpointError(
        f"{source} refused: loading it would need arbitrary unpickling ({why}). "
        "Re-save it from a trusted environment as plain tensors: "
        "torch.save({'model_state_dict': model.state_dict(), 'epoch': ..., 'best_val_acc': ...}, path)"
    )


def _disallowed_globals(data: bytes) -> list[str]:
    """The globals a raw pickle imports that torch's weights_only loader does not allow, read from
    its opcodes (nothing is executed). STACK_GLOBAL (protocol 4+) takes the two strings pushed last,
    directly or from the memo."""
    allowed = {
        *_get_allowed_globals(),
        *(f"{g.__module__}.{g.__qualname__}" for g in get_safe_globals() if not isinstance(g, tuple)),
    }
    found: list[str] = []
    strings: list[str] = []
    memo: dict[int, str | None] = {}
    top: str | None = None  # the string on top of the stack, when the last push was one
    try:
        for op, arg, _ in pickletools.genops(data):
            if isinstance(arg, str) and op.name.endswith(("UNICODE", "UNICODE8", "STRING")):
                top = arg
                strings.append(arg)
            elif op.name == "MEMOIZE":
                memo[len(memo)] = top
            elif op.name in ("PUT", "BINPUT", "LONG_BINPUT") and isinstance(arg, int):
                memo[arg] = top
            elif op.name in ("GET", "BINGET", "LONG_BINGET") and isinstance(arg, int):
                top = memo.get(arg)
                if top is not None:
                    strings.append(top)
            else:
                if op.name in ("GLOBAL", "INST") and isinstance(arg, str):
                    found.append(arg.replace(" ", "."))
                elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                    found.append(f"{strings[-2]}.{strings[-1]}")
                top = None
    except ValueError:
        pass  # malformed: torch.load says so below
    return sorted({g for g in found if g not in allowed})


def _optional_number(value: Any, kind: type[int] | type[float]) -> Any:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    return kind(value) if isinstance(value, int | float) else None


def _first_line(e: BaseException) -> str:
    return (str(e).splitlines() or [""])[0][:200]
