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
from typing import TYPE_CHECKING

from .. import telemetry
from ..errors import Overloaded
from .ledger import Ledger

if TYPE_CHECKING:
    from .context import RequestContext

# How far one answer moves the estimate when its queue held a full batch or more. Slow enough that a
# lucky answer does not open the door to a crowd (docs/performance.md#overload: the smoothing).
_SMOOTHING = 0.05


class Admission:
    """Admits requests by expected wait (see the module docstring): `enter` admits or sheds, `leave`
    learns from the answer. `ledger` is the worker's ledger. Before any answer has been measured, an
    image is assumed to take `cold_seconds_per_image`. Each answer moves the estimate of all workers
    towards its own measure, less so when fewer than `batch_images` were queued: the latency of a
    short queue is mostly one forward pass, not the drain rate of a long one. Times are the request
    context's stamps (edge/context.py): it arrived, was admitted, finished."""

    def __init__(
        self,
        ledger: Ledger,
        *,
        budget_s: float,
        batch_images: int = 16,
        cold_seconds_per_image: float = 0.02,
        max_hold_s: float = 2.0,
    ) -> None:
        self.ledger = ledger
        self.budget_s = budget_s
        self.batch_images = batch_images
        self.cold_seconds_per_image = cold_seconds_per_image
        self.max_hold_s = max_hold_s
        self._ahead: dict[int, float] = {}  # images ahead of each request admitted, by id(ctx)
        self._publish()

    async def enter(self, ctx: RequestContext) -> None:
        """Admit the request, or hold it and raise 503 OVERLOADED."""
        ctx.admitted_ns = time.time_ns()
        images = max(1, ctx.images)
        ahead = self.ledger.images_in_flight()
        per_image = self._seconds_per_image()
        wait = (ctx.admitted_ns - ctx.arrived_ns) / 1e9 + (ahead + images) * per_image
        if ahead and wait > self.budget_s:
            ctx.admitted_ns = 0  # shed: not admitted
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
        self._ahead[id(ctx)] = ahead
        self.ledger.add(images)
        self._publish()

    def leave(self, ctx: RequestContext) -> None:
        """An admitted request has its answer (stamped finished): learn from it if the model computed it."""
        images = max(1, ctx.images)
        ahead = self._ahead.pop(id(ctx))
        self.ledger.add(-images)
        if ctx.status == 200 and ctx.code is None:  # how long each image in the queue took
            queued = ahead + images
            estimate = self._seconds_per_image()
            weight = _SMOOTHING * min(1.0, queued / self.batch_images)
            measured = (ctx.finished_ns - ctx.admitted_ns) / 1e9 / queued
            self.ledger.learn(estimate + weight * (measured - estimate))
        self._publish()

    def _seconds_per_image(self) -> float:
        return self.ledger.measured_seconds_per_image() or self.cold_seconds_per_image

    def _publish(self) -> None:
        """This worker's images in flight, and the wait the whole server's ledger now implies."""
        telemetry.IMAGES_IN_FLIGHT.set(self.ledger.in_flight)
        telemetry.EXPECTED_WAIT.set((self.ledger.images_in_flight() + 1) * self._seconds_per_image())
