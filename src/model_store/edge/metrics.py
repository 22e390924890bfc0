"""Answers and edge latency on /metrics (probes and scrapes aside), by route and error code."""

from __future__ import annotations

import time
from collections.abc import Collection

from .. import telemetry
from .asgi import PROBES, ASGIApp, Message, Receive, Scope, Send, facts


class RequestMetrics:
    """Counts each answer and times it from here, by route (one of `routes`, else `other`) and the
    code the error contract gave it (OK when none); 503 OVERLOADED also counts as shed. Every route's
    OK and shed series exist from the start, so rates read 0 rather than nothing."""

    def __init__(self, app: ASGIApp, *, routes: Collection[str]) -> None:
        self.app = app
        self.routes = frozenset(routes)
        for route in self.routes:
            telemetry.REQUESTS.labels(route, telemetry.OK)
            telemetry.SHED.labels(route)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PROBES:
            await self.app(scope, receive, send)
            return
        started, answered = time.perf_counter(), False
        learnt = facts(scope)

        async def observe(message: Message) -> None:
            nonlocal answered
            answered = answered or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, observe)
        finally:
            if answered:  # a client that left before its answer has none to count
                telemetry.observe_answer(
                    telemetry.route_label(scope["path"], self.routes),
                    telemetry.code_label(learnt.get("error_code")),
                    time.perf_counter() - started,
                )
