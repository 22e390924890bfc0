"""One request's context: made once at the door (edge/hall.py), filled in as the request passes,
read once at the end (edge/observer.py).

It holds the request's ids (its request id: the client's, else the id of the trace it begins; the
trace and span ids of its span), when it arrived, how many images it carries, and its answer's
status and error code. Every clock reading of a request is one of its stamps (`arrived_ns`,
`admitted_ns`, `finished_ns`): the access line, the metrics, admission's estimate and the span all
read them, and none keeps a clock of its own.
"""

from __future__ import annotations

import re
import time
import uuid
from contextvars import Token
from dataclasses import dataclass

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace

from ..logs import REQUEST
from .asgi import Scope
from .routes import Route

_WELL_FORMED = re.compile(rb"[A-Za-z0-9._:\-]{1,128}")
_ID_HEADERS = (b"x-request-id", b"x-correlation-id")
_TRACE_HEADERS = frozenset({b"traceparent", b"tracestate"})  # W3C Trace Context


@dataclass(slots=True, eq=False)
class RequestContext:
    route: Route
    method: str
    request_id: str
    arrived_ns: int
    trace_id: str = ""
    span_id: str = ""
    span: trace.Span = trace.INVALID_SPAN  # the request's server span (recorded or not)
    images: int = 0
    status: int | None = None  # the answer's, once it has begun
    code: str | None = None  # the error contract's, once an error answer is rendered
    rendered: int = 0  # the status of the error answer rendered (edge/contract.py)
    admitted_ns: int = 0
    finished_ns: int = 0
    tokens: tuple[Token[object], Token[otel_context.Context] | None] | None = None  # to undo `begin`

    def finish(self) -> None:
        self.finished_ns = time.time_ns()

    @property
    def seconds(self) -> float:
        return (self.finished_ns - self.arrived_ns) / 1e9


def current() -> RequestContext | None:
    """The request being answered in this task, if any."""
    return REQUEST.get()


def begin(scope: Scope, route: Route, tracer: trace.Tracer) -> RequestContext:
    """The context of a request that has just arrived, current until `end`, with its span (probes
    and scrapes aside): a server span, the child of the client's W3C `traceparent` when it sent one,
    recorded as the tracer's sampler decides (BentoML's tracing settings: service.py). A span that
    is not recorded costs two random ids."""
    ctx = RequestContext(route, scope["method"], given_request_id(scope), time.time_ns())
    if not route.counted:  # probes and scrapes: no span, nothing logged
        ctx.request_id = ctx.request_id or uuid.uuid4().hex
        ctx.tokens = (REQUEST.set(ctx), None)
        return ctx
    carrier = {k.decode(): v.decode("latin-1") for k, v in scope["headers"] if k in _TRACE_HEADERS}
    parent = propagate.extract(carrier) if carrier else None
    ctx.span = tracer.start_span(
        f"{ctx.method} {route.label}", context=parent, kind=trace.SpanKind.SERVER, start_time=ctx.arrived_ns
    )
    span_context = ctx.span.get_span_context()
    if span_context.is_valid:
        ctx.trace_id, ctx.span_id = f"{span_context.trace_id:032x}", f"{span_context.span_id:016x}"
    # A new id: the new trace's (a trace the client began may hold several requests).
    ctx.request_id = ctx.request_id or (ctx.trace_id if parent is None else "") or uuid.uuid4().hex
    ctx.tokens = (REQUEST.set(ctx), otel_context.attach(trace.set_span_in_context(ctx.span)))
    return ctx


def end(ctx: RequestContext) -> None:
    """The request is no longer current (it was observed: edge/observer.py)."""
    if ctx.tokens is not None:
        request, span = ctx.tokens
        if span is not None:
            otel_context.detach(span)
        REQUEST.reset(request)


def given_request_id(scope: Scope) -> str:
    """The client's `X-Request-ID` (or `X-Correlation-ID`) when well-formed, else ""."""
    given = dict.fromkeys(_ID_HEADERS, b"")
    for name, value in scope["headers"]:
        if name in given and not given[name]:
            given[name] = value
    for value in given.values():
        if _WELL_FORMED.fullmatch(value):
            return value.decode()
    return ""
