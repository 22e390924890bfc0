"""Graceful shutdown for the runner: answer the API workers until they have drained.

On SIGTERM BentoML's process manager signals the API workers and the runner at the same time.
The API workers stop accepting and finish the requests they hold, but those still need the
runner, which would already be gone: the requests would fail. The runner therefore holds its
own SIGTERM until it has seen no work for `idle_s` seconds (or `max_s` have passed), then hands
the signal to the server's own handler, which shuts down as usual.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from types import FrameType

log = logging.getLogger(__name__)


class DrainBeforeExit:
    def __init__(self, *, idle_s: float = 2.0, max_s: float = 120.0) -> None:
        self.idle_s = idle_s
        self.max_s = max_s
        self._last_work = time.monotonic()

    def touch(self) -> None:
        """Record work: the exit waits until none has come for `idle_s`."""
        self._last_work = time.monotonic()

    def install(self) -> bool:
        """Wrap the current SIGTERM handler; only possible from the main thread of the process."""
        handler = signal.getsignal(signal.SIGTERM)
        if threading.current_thread() is not threading.main_thread() or not callable(handler):
            log.warning("SIGTERM not deferred: no server handler to wrap in this thread")
            return False

        def on_sigterm(sig: int, frame: FrameType | None) -> None:
            threading.Thread(target=self._exit_when_idle, args=(handler, sig, frame), daemon=True).start()

        signal.signal(signal.SIGTERM, on_sigterm)
        return True

    def _exit_when_idle(self, handler, sig: int, frame: FrameType | None) -> None:  # noqa: ANN001
        log.info("SIGTERM: serving until idle for %.1f s (at most %.0f s)", self.idle_s, self.max_s)
        deadline = time.monotonic() + self.max_s
        while time.monotonic() < deadline and time.monotonic() - self._last_work < self.idle_s:
            time.sleep(0.05)
        log.info("drained; shutting down")
        handler(sig, frame)
