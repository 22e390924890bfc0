"""The one observation of each request, at its end: the access-log line, the request metrics and the
edge span's attributes, from the same context (edge/context.py), so they agree on its route, code
and duration. Probes and scrapes are not observed. Nothing here carries an image or a string the
client chose, but the request id (well-formed, edge/context.py) that lets a client find its line.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from opentelemetry import trace

from .. import telemetry
from .context import RequestContext
from .routes import OTHER, Route

log = logging.getLogger("pyramidnet.access")


def expect(routes: Iterable[Route]) -> None:
    """Every counted route's OK and shed series from the start, so their rates read 0, not nothing."""
    for route in [*routes, OTHER]:
        if route.counted:
            telemetry.REQUESTS.labels(route.label, telemetry.OK)
            telemetry.SHED.labels(route.label)


def observe(ctx: RequestContext) -> None:
    route, code = ctx.route.label, telemetry.code_label(ctx.code)
    seconds = ctx.seconds
    if ctx.status is not None:  # a client that left before its answer has none to count
        telemetry.observe_answer(route, code, seconds)
    log.info(
        "request",
        extra={
            "request_id": ctx.request_id,
            "trace_id": ctx.trace_id,
            "span_id": ctx.span_id,
            "method": ctx.method,
            "route": route,
            "status": ctx.status,
            "error_code": ctx.code,
            "latency_ms": round(seconds * 1000, 3),
            "images": ctx.images,
        },
    )
    if ctx.span.is_recording():
        ctx.span.set_attributes(
            {
                "http.request.method": ctx.method,
                "http.route": route,
                "http.response.status_code": ctx.status or 0,
                "pyramidnet.request_id": ctx.request_id,
                "pyramidnet.code": code,
                "pyramidnet.images": ctx.images,
                "pyramidnet.latency_ms": round(seconds * 1000, 3),
            }
        )
        if ctx.status is None or ctx.status >= 500:
            ctx.span.set_status(trace.StatusCode.ERROR, code)
    ctx.span.end(end_time=ctx.finished_ns)
