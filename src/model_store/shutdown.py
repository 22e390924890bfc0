"""Graceful shutdown for the runner: answer the API workers until they have drained.

On SIGTERM (a stop from Kubernetes) or SIGINT (Ctrl-C reaches every process of the group),
the API workers and the runner are signalled at the same time. The API workers stop accepting
and finish the requests they hold, but those still need the runner, which would already be
gone: its batcher would cancel what it queues (503s). The runner therefore holds the signal
until no call is in flight and none has arrived for `idle_s` seconds (or `max_s` have passed),
then hands it to the server's own handler. An idle runner stops within `idle_s` of its start.

Calls are counted where they arrive, by `CountCalls` around the runner's ASGI app, so a call
that waits in the batcher's queue counts as much as one in a forward pass.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger(__name__)
SignalHandler = Callable[[int, FrameType | None], Any]


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
        """Wrap the server's SIGTERM and SIGINT handlers; only possible from the main thread."""
        if threading.current_thread() is not threading.main_thread():
            log.warning("stop signals not deferred: not on the main thread")
            return False
        for sig in (signal.SIGTERM, signal.SIGINT):
            handler = signal.getsignal(sig)
            if not callable(handler):
                log.warning("%s not deferred: no server handler to wrap", sig.name)
                continue
            signal.signal(sig, self._deferring(handler))
        return True

    def _deferring(self, handler: SignalHandler) -> SignalHandler:
        started = threading.Event()

        def on_signal(sig: int, frame: FrameType | None) -> None:
            if not started.is_set():  # a second Ctrl-C does not start a second wait
                started.set()
                threading.Thread(target=self._exit_when_idle, args=(handler, sig, frame), daemon=True).start()

        return on_signal

    def _exit_when_idle(self, handler: SignalHandler, sig: int, frame: FrameType | None) -> None:
        name = signal.Signals(sig).name
        log.info("%s: serving until idle for %.1f s (at most %.0f s)", name, self.idle_s, self.max_s)
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
