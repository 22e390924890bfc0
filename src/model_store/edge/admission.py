"""Admission control by time, over all API workers of a server.

A request is admitted while the wait it can expect fits a budget: the time since it arrived at the
edge (under load a request can queue in the worker before it gets here), plus the images in flight
on every worker and its own times the seconds per image measured on recent answers. One is always
admitted when nothing is in flight. Beyond the budget it is shed with 503 OVERLOADED and
Retry-After, but not at once: a retry helps only once the requests shed before it have had their
turn, so the answer is held that long (the shed requests being held on every worker, plus this
one, times the seconds per image; at least the excess wait, at most `max_hold_s`). Clients that
retry at once (most do) then wait instead of spinning, and the 503s do not take the CPU the model
needs. The counters live in a `Ledger` every worker of the server shares (ledger.py); each change
is published on /metrics as the images in flight and the wait a one-image request would expect.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Collection

from .. import telemetry
from ..errors import Overloaded
from .asgi import ASGIApp, Message, Receive, Scope, Send, facts
from .ledger import Ledger

# How far one answer moves the estimate when its queue held a full batch or more. Slow enough that a
# lucky answer does not open the door to a crowd (docs/performance.md#overload: the smoothing).
_SMOOTHING = 0.05


class Admission:
    """Admits POSTs to `routes` by expected wait (see the module docstring). `ledger` makes the
    worker's ledger (called here, in the worker). Before any answer has been measured, an image is
    assumed to take `cold_seconds_per_image`. Each answer moves the estimate of all workers towards
    its own measure, less so when fewer than `batch_images` were queued: the latency of a short queue
    is mostly one forward pass, not the drain rate of a long one."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        routes: Collection[str],
        ledger: Callable[[], Ledger],
        budget_s: float,
        batch_images: int = 16,
        cold_seconds_per_image: float = 0.02,
        max_hold_s: float = 2.0,
    ) -> None:
        self.app = app
        self.batch_images = batch_images
        self.routes = frozenset(routes)
        self.ledger = ledger()
        self.budget_s = budget_s
        self.cold_seconds_per_image = cold_seconds_per_image
        self.max_hold_s = max_hold_s
        self._publish()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in self.routes:
            await self.app(scope, receive, send)
            return
        learnt, now = facts(scope), time.monotonic()
        images = max(1, learnt.get("images", 1))
        ahead = self.ledger.images_in_flight()
        per_image = self._seconds_per_image()
        wait = now - learnt.get("arrived", now) + (ahead + images) * per_image
        if ahead and wait > self.budget_s:
            excess = wait - self.budget_s
            hold = min(max(excess, (self.ledger.requests_held() + 1) * per_image), self.max_hold_s)
            self.ledger.hold(1)
            try:
                await asyncio.sleep(hold)  # an earlier retry would be shed again
            finally:
                self.ledger.hold(-1)
            raise Overloaded(
                f"the service is at capacity (about {wait:.1f} s of work queued, over its "
                f"{self.budget_s:g} s budget); retry shortly",
                retry_after=math.ceil(hold),
            )
        status = None

        async def observe(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.ledger.add(images)
        self._publish()
        try:
            await self.app(scope, receive, observe)
        finally:
            self.ledger.add(-images)
            if status == 200:  # an answer the model computed: how long each image in the queue took
                queued = ahead + images
                estimate = self._seconds_per_image()
                weight = _SMOOTHING * min(1.0, queued / self.batch_images)
                self.ledger.learn(estimate + weight * ((time.monotonic() - now) / queued - estimate))
            self._publish()

    def _seconds_per_image(self) -> float:
        return self.ledger.measured_seconds_per_image() or self.cold_seconds_per_image

    def _publish(self) -> None:
        """This worker's images in flight, and the wait the whole server's ledger now implies."""
        telemetry.IMAGES_IN_FLIGHT.set(self.ledger.in_flight)
        telemetry.EXPECTED_WAIT.set((self.ledger.images_in_flight() + 1) * self._seconds_per_image())
