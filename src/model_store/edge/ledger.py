"""The counters admission decides by, shared by every API worker of one server.

One slot per worker in a file all of them map (in /dev/shm): the images the worker has in flight,
the shed requests it is holding, and its estimate of the seconds per image. Each worker writes only
its own slot, so no locks; each reads all of them.
"""

from __future__ import annotations

import atexit
import mmap
import os
import struct
import tempfile
from pathlib import Path

_SLOT = struct.Struct("<ddd")  # images in flight, shed requests held, seconds per image (estimate)


class Ledger:
    """One slot per API worker in a file every worker of the server maps: each writes only its
    own slot (no locks), and reads all of them."""

    def __init__(self, path: Path, workers: int, index: int) -> None:
        size = _SLOT.size * workers
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size < size:
                os.ftruncate(fd, size)  # every worker truncates to the same size: a race is harmless
            self._map = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        self._offset = _SLOT.size * index
        self._slots = workers
        self.in_flight, self.held, self.seconds_per_image = 0.0, 0.0, 0.0
        self._write()

    @classmethod
    def for_server(cls, workers: int, index: int) -> Ledger:
        """The ledger of the `bentoml serve` this worker belongs to (keyed by its process), removed
        at exit; `index` is this worker's, from 0."""
        shm = Path("/dev/shm")
        path = (shm if shm.is_dir() else Path(tempfile.gettempdir())) / f"pyramidnet-admission-{os.getppid()}"
        atexit.register(lambda: path.unlink(missing_ok=True))
        return cls(path, workers, index)

    def _column(self, k: int) -> list[float]:
        return [_SLOT.unpack_from(self._map, i * _SLOT.size)[k] for i in range(self._slots)]

    def images_in_flight(self) -> float:
        return sum(self._column(0))

    def requests_held(self) -> float:
        return sum(self._column(1))

    def measured_seconds_per_image(self) -> float | None:
        measured = [s for s in self._column(2) if s > 0]
        return sum(measured) / len(measured) if measured else None

    def add(self, images: int) -> None:
        self.in_flight += images
        self._write()

    def hold(self, requests: int) -> None:
        self.held += requests
        self._write()

    def learn(self, seconds_per_image: float) -> None:
        """This worker's estimate from now on."""
        self.seconds_per_image = seconds_per_image
        self._write()

    def _write(self) -> None:
        _SLOT.pack_into(self._map, self._offset, self.in_flight, self.held, self.seconds_per_image)
