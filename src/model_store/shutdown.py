"""Graceful shutdown for the runner: answer the API workers until they have drained.

On SIGTERM BentoML's process manager signals the API workers and the runner at the same time.
The API workers stop accepting and finish the requests they hold, but those still need the
runner, which would already be gone: its batcher would cancel what it queues (503s). The runner
therefore holds its own SIGTERM until no call is in flight and none has arrived for `idle_s`
seconds (or `max_s` have passed), then hands the signal to the server's own handler.

Calls are counted where they arrive, by `CountCalls` around the runner's ASGI app, so a call
that waits in the batcher's queue counts as much as one in a forward pass.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from types import FrameType

from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger(__name__)


class DrainBeforeExit:
    def __init__(self, *, idle_s: float = 2.0, max_s: float = 120.0) -> None:
        self.idle_s = idle_s
        self.max_s = max_s
        self._lock = threading.Lock()
        self._in_flight = 0
        self._last_work = time.monotonic()

    def begin(self) -> None:
        with self._lock:
            self._in_flight += 1
            self._last_work = time.monotonic()

    def end(self) -> None:
        with self._lock:
            self._in_flight -= 1
            self._last_work = time.monotonic()

    def idle(self) -> bool:
        with self._lock:
            return self._in_flight == 0 and time.monotonic() - self._last_work >= self.idle_s

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
        while time.monotonic() < deadline and not self.idle():
            time.sleep(0.05)
        log.info("drained; shutting down")
        handler(sig, frame)


class CountCalls:
    """ASGI middleware: every POST (an API call, not a probe) is work in flight for `drain`."""

    def __init__(self, app: ASGIApp, drain: DrainBeforeExit) -> None:
        self.app = app
        self.drain = drain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        self.drain.begin()
        try:
            await self.app(scope, receive, send)
        finally:
            self.drain.end()
