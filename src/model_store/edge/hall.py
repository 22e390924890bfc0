"""The front hall: the service's HTTP edge, one ASGI middleware that every request passes once.

For each request, in order:
1. its route is looked up in the route table (edge/routes.py) and its context made (edge/context.py):
   request id, trace and span ids, arrival;
2. the docs page and the metrics scrape are answered here;
3. a guarded route needs an API key, when keys are configured;
4. a POST's body is read within limits and parsed as its route takes it (edge/forms.py);
5. a route that carries images is admitted by expected wait or shed (edge/admission.py), and its
   answer must begin within the deadline;
6. the answer passes through one `send` (`_Answer`): the request id and security headers are added,
   an error answer the framework made is rendered in the contract's shape (edge/contract.py);
7. an ApiError raised on the way is rendered, once; then the request is observed (edge/observer.py).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
from collections.abc import Callable
from contextlib import nullcontext

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest, multiprocess
from starlette.datastructures import Headers

from ..bentoml_internals import tracer
from ..errors import INTERNAL_MESSAGE, ApiError, Internal, MethodNotAllowed, Timeout, Unauthorized
from . import context, observer
from .admission import Admission
from .asgi import ASGIApp, Message, Receive, Scope, Send
from .contract import Headers as ErrorHeaders
from .contract import conform, render, render_error
from .docs import PAGE, Document
from .forms import Bodies
from .routes import Kind, RouteTable

log = logging.getLogger("pyramidnet.edge")

SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
]
# BentoML's own id header is an OpenTelemetry span id that none of our log lines carries:
# answering with it beside ours would give a client two ids and only one that finds anything.
_DROPPED = (b"x-bentoml-request-id", b"x-request-id")
_PAGES = frozenset({"/", "/docs"})
KEY_REQUIRED = "a valid API key is required: 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"


class Hall:
    """The edge in front of the service's routes (see the module docstring). `admission` makes the
    worker's Admission (called here, in the worker); `keys`: the API keys, none for no
    authentication; `document`: the OpenAPI document's rewrite."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        routes: RouteTable,
        bodies: Bodies,
        admission: Callable[[], Admission],
        document: Document,
        timeout_s: float,
        keys: list[bytes] | None = None,
    ) -> None:
        self.app = app
        self.routes = routes
        self.bodies = bodies
        self.admission = admission()
        self.document = document
        self.timeout_s = timeout_s
        self.keys = keys or []
        self.tracer = tracer("pyramidnet.edge")
        observer.expect(routes.values())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = self.routes.find(scope["path"])
        ctx = context.begin(scope, route, self.tracer)
        answer = _Answer(ctx, scope, send)
        try:
            await self._pass(ctx, scope, receive, answer)
        except Exception as e:
            if ctx.status is not None:
                raise  # part of an answer is on the wire: nothing sane is left to send
            if not isinstance(e, ApiError):
                log.exception("unhandled error in %s %s", ctx.method, route.label)
                e = Internal(INTERNAL_MESSAGE)
            await answer.error(e.status, *render_error(e))
        finally:
            ctx.finish()
            if ctx.admitted_ns:
                self.admission.leave(ctx)
            if route.counted:
                observer.observe(ctx)
            context.end(ctx)

    async def _pass(self, ctx: context.RequestContext, scope: Scope, receive: Receive, answer: _Answer) -> None:
        route, method = ctx.route, ctx.method
        if route.kind is Kind.METRICS:
            if method not in ("GET", "HEAD"):
                allow = "GET, HEAD"
                headers, body = render(
                    405, MethodNotAllowed.code, f"{method} {route.path} is not allowed: use {allow}", allow=allow
                )
                await answer.error(405, headers, body)
                return
            await answer.send_body(200, "text/plain; version=0.0.4; charset=utf-8", await asyncio.to_thread(_scrape))
            return
        if route.kind is Kind.DOCS and scope["path"] in _PAGES and method in ("GET", "HEAD"):
            await answer.send_body(200, "text/html; charset=utf-8", PAGE if method == "GET" else b"", len(PAGE))
            return
        if route.guarded and self.keys and method != "OPTIONS" and not self.accepts(Headers(scope=scope)):
            raise Unauthorized(KEY_REQUIRED)
        if route.kind is Kind.DOCS and scope["path"] == "/docs.json":
            answer.transform = self.document
        if method != "POST" or not route.reads_body:
            await self.app(scope, receive, answer)
            return
        scope, receive = await self.bodies.read(ctx, scope, receive)
        if not route.admitted:
            await self.app(scope, receive, answer)
            return
        with self.tracer.start_as_current_span("admission") if ctx.span.is_recording() else nullcontext():
            await self.admission.enter(ctx)
        try:
            async with asyncio.timeout(self.timeout_s):
                await self.app(scope, receive, answer)
        except TimeoutError:
            if ctx.status is not None:
                raise  # the answer has begun; nothing sane is left to send
            raise Timeout(f"no answer within {self.timeout_s:g} s") from None

    def accepts(self, headers: Headers) -> bool:
        """`Authorization: Bearer <key>` or `X-API-Key: <key>` holds one of the keys."""
        authorization = headers.get("authorization", "")
        offered = headers.get("x-api-key") or (authorization[7:] if authorization[:7].lower() == "bearer " else "")
        # Compare against every key, always, so timing says nothing about which or how much matched.
        matched = False
        for key in self.keys:
            matched |= hmac.compare_digest(offered.encode(), key)
        return matched


class _Answer:
    """The one `send` of a request: adds the request id (and the security headers, on the routes
    that take them) to the answer; holds an error answer the framework made until its body is
    complete, then sends the contract's instead; passes the OpenAPI document through `transform`."""

    __slots__ = ("_chunks", "_held", "ctx", "scope", "send", "transform")

    def __init__(self, ctx: context.RequestContext, scope: Scope, send: Send) -> None:
        self.ctx, self.scope, self.send = ctx, scope, send
        self.transform: Document | None = None
        self._held: Message | None = None
        self._chunks: list[bytes] = []

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            status = message["status"]
            if (status >= 400 and status != self.ctx.rendered) or (status == 200 and self.transform):
                self._held = message  # the framework's own error answer, or the document: read it whole
                return
            await self._start(message)
            return
        if self._held is None:
            await self.send(message)
            return
        self._chunks.append(message.get("body", b""))
        if message.get("more_body", False):
            return
        held, body = self._held, b"".join(self._chunks)
        self._held, self._chunks = None, []
        headers = {k.decode().lower(): v.decode() for k, v in held.get("headers", [])}
        if held["status"] == 200 and self.transform is not None:
            await self.send_body(200, "application/json", self.transform(body))
            return
        code, text, retry_after = conform(
            held["status"], body, self.ctx.route, self.ctx.method, self.scope["path"], headers
        )
        await self.error(held["status"], *render(held["status"], code, text, retry_after, headers.get("allow")))

    async def _start(self, message: Message) -> None:
        self.ctx.status = message["status"]
        headers = [(k, v) for k, v in message.get("headers", []) if k.lower() not in _DROPPED]
        headers.append((b"x-request-id", self.ctx.request_id.encode()))
        if self.ctx.route.secured:
            headers.extend(SECURITY_HEADERS)
        await self.send({**message, "headers": headers})

    async def send_body(self, status: int, content_type: str, body: bytes, length: int | None = None) -> None:
        size = str(len(body) if length is None else length).encode()
        headers = [(b"content-type", content_type.encode()), (b"content-length", size)]
        await self._start({"type": "http.response.start", "status": status, "headers": headers})
        await self.send({"type": "http.response.body", "body": body})

    async def error(self, status: int, headers: ErrorHeaders, body: bytes) -> None:
        raw = [(k.encode(), v.encode()) for k, v in headers.items()]
        raw.append((b"content-length", str(len(body)).encode()))
        await self._start({"type": "http.response.start", "status": status, "headers": raw})
        await self.send({"type": "http.response.body", "body": body})


def _scrape() -> bytes:
    """Every process's metrics: prometheus_client's multiprocess mode, which `bentoml serve` sets up
    for all its workers (PROMETHEUS_MULTIPROC_DIR); this process's alone outside it."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return generate_latest(registry)
