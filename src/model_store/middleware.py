"""The service's HTTP edge, one ASGI middleware in front of the API routes.

In order, for each request: a request id (the client's `X-Request-ID` / `X-Correlation-ID` when
well-formed, else a new one); API-key authentication when keys are configured; for the POST
routes a bounded body, only the declared multipart file fields, per-file size limits and
admission control (images in flight, shed with 503 OVERLOADED + Retry-After); a time limit
(504 TIMEOUT). On the way out every error answer is rewritten into the contract
`{"error": {"code", "message"}, "request_id"}` (BentoML's own validation errors and 500s too),
security headers are added, and one JSON log line records the request.

BentoML answers a file part under an unknown field name with a 500 (it JSON-decodes the bytes)
and downloads any URL given as a text value; both are refused here, before the framework runs.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.datastructures import Headers, UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request

from .errors import (
    INTERNAL_MESSAGE,
    ApiError,
    Overloaded,
    PayloadTooLarge,
    Timeout,
    Unauthorized,
    UnsupportedMediaType,
    ValidationFailed,
    error_body,
)
from .logs import REQUEST_ID
from .schemas import document_errors

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

access_log = logging.getLogger("pyramidnet.access")

_WELL_FORMED_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
_PROBES = frozenset({"/livez", "/readyz", "/healthz", "/metrics"})
_SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
]
# The code a framework-made error answer gets, by status.
_CODES = {
    400: "VALIDATION_ERROR", 401: "UNAUTHORIZED", 404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED",
    413: "PAYLOAD_TOO_LARGE", 415: "UNSUPPORTED_MEDIA_TYPE", 422: "VALIDATION_ERROR",
    429: "RATE_LIMITED", 500: "INTERNAL", 503: "OVERLOADED", 504: "TIMEOUT",
}  # fmt: skip


class ApiEdge:
    """See the module docstring. `file_fields` maps each POST route to the file fields it takes."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        file_fields: Mapping[str, set[str]],
        api_keys: list[bytes],
        max_request_bytes: int,
        max_file_bytes: int,
        max_queued_images: int,
        timeout_s: float,
    ) -> None:
        self.app = app
        self.file_fields = file_fields
        self.api_keys = api_keys
        self.max_request_bytes = max_request_bytes
        self.max_file_bytes = max_file_bytes
        self.max_queued_images = max_queued_images
        self.timeout_s = timeout_s
        self.in_flight = 0  # images admitted and not yet answered, in this worker

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        request_id = _request_id(headers)
        token = REQUEST_ID.set(request_id)
        exchange = _Exchange(send, request_id, api=scope["path"] in self.file_fields)
        started = time.perf_counter()
        images = 0
        fields = self.file_fields.get(scope["path"]) if scope["method"] == "POST" else None
        try:
            self._authenticate(scope, headers)
            if fields:  # an image endpoint
                self._shed_if_full(1)  # before reading the body: shedding must stay cheap
                body = await self._read_body(receive)
                images = await self._check_form(scope, body)
                await self._admit(scope, _replay(body, receive), exchange, images)
            elif fields is not None:
                # An endpoint without inputs: what was sent is irrelevant (but bounded), and BentoML
                # answers a body it cannot parse with a 500. It sees an empty JSON object instead.
                await self._read_body(receive)
                await self.app(_empty_json(scope), _replay(b"{}", receive), exchange)
            elif scope["path"] == "/docs.json":
                await self.app(scope, receive, _Rewrite(exchange, lambda spec: document_errors(spec, self.file_fields)))
            else:
                await self.app(scope, receive, exchange)
        except ApiError as e:
            await exchange.send_error(e)
        finally:
            REQUEST_ID.reset(token)
            if scope["path"] not in _PROBES:
                access_log.info(
                    "request",
                    extra={
                        "request_id": request_id,
                        "method": scope["method"],
                        "route": scope["path"],
                        "status": exchange.status,
                        "error_code": exchange.error_code,
                        "latency_ms": round((time.perf_counter() - started) * 1000, 2),
                        "images": images,
                    },
                )

    def _authenticate(self, scope: Scope, headers: Headers) -> None:
        if not self.api_keys or scope["path"] in _PROBES or scope["method"] == "OPTIONS":
            return
        authorization = headers.get("authorization", "")
        offered = headers.get("x-api-key") or (authorization[7:] if authorization[:7].lower() == "bearer " else "")
        # Compare against every key, always, so timing says nothing about which or how much matched.
        matched = False
        for key in self.api_keys:
            matched |= hmac.compare_digest(offered.encode(), key)
        if not matched:
            raise Unauthorized("a valid API key is required: 'Authorization: Bearer <key>' or 'X-API-Key: <key>'")

    async def _read_body(self, receive: Receive) -> bytes:
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_request_bytes:
                raise PayloadTooLarge(f"request body exceeds the limit of {self.max_request_bytes:,} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    async def _check_form(self, scope: Scope, body: bytes) -> int:
        """Refuse anything but a multipart form of exactly the declared file fields within the size
        limits (so the framework's own validation, which logs tracebacks, never sees a bad upload);
        return the number of files."""
        expected = self.file_fields[scope["path"]]
        request = Request(scope, _replay(body, None))
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise UnsupportedMediaType(f"send the image(s) as multipart/form-data in {_names(expected)}")
        try:
            form = await request.form(max_files=10_000)
        except (MultiPartException, HTTPException) as e:  # Starlette raises the latter inside an app
            raise ValidationFailed(f"malformed multipart body: {getattr(e, 'message', None) or e.detail}") from None
        try:
            files = 0
            for name, value in form.multi_items():
                if name not in expected:
                    raise ValidationFailed(f"unexpected form field {name!r}; this endpoint takes {_names(expected)}")
                if not isinstance(value, UploadFile):
                    raise ValidationFailed(f"form field {name!r} must be a file upload (URLs and text are refused)")
                if (value.size or 0) > self.max_file_bytes:
                    raise PayloadTooLarge(
                        f"file {files} ({value.filename or name}) is {value.size:,} bytes; "
                        f"the limit is {self.max_file_bytes:,}"
                    )
                files += 1
            if missing := expected - set(form.keys()):
                raise ValidationFailed(f"missing form field {_names(missing)}")
            return files
        finally:
            await form.close()

    def _shed_if_full(self, cost: int) -> None:
        """Overloaded unless `cost` more images fit the queue (one request is always let in when idle)."""
        if self.in_flight and self.in_flight + cost > self.max_queued_images:
            raise Overloaded(f"the service is at capacity ({self.max_queued_images} images queued); retry shortly")

    async def _admit(self, scope: Scope, receive: Receive, exchange: _Exchange, images: int) -> None:
        """Admit while the images in flight fit the queue, else shed at once; then bound the time."""
        cost = max(images, 1)
        self._shed_if_full(cost)
        self.in_flight += cost
        try:
            await asyncio.wait_for(self.app(scope, receive, exchange), self.timeout_s)
        except TimeoutError:
            if exchange.status is not None:
                raise  # the answer has begun; nothing sane is left to send
            raise Timeout(f"no answer within {self.timeout_s:g} s") from None
        finally:
            self.in_flight -= cost


class _Exchange:
    """The `send` the app sees: adds the request id and security headers, and rewrites any
    error answer into the contract (holding back its body until it can be rewritten)."""

    def __init__(self, send: Send, request_id: str, *, api: bool) -> None:
        self._send = send
        self.request_id = request_id
        self.api = api
        self.status: int | None = None
        self.error_code: str | None = None
        self._held: Message | None = None
        self._chunks: list[bytes] = []

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            if self.status >= 400:
                self._held = message
                return
            await self._send({**message, "headers": self._headers(message.get("headers", []))})
            return
        if self._held is None:
            await self._send(message)
            return
        self._chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            held, self._held = self._held, None
            code, text = _conform(held["status"], b"".join(self._chunks))
            await self._respond(held["status"], code, text, held.get("headers", []))

    async def send_error(self, error: ApiError) -> None:
        if self.status is not None and self._held is None:
            return  # an answer is already on the wire
        self.status = error.status
        headers = [(b"retry-after", str(error.retry_after).encode())] if error.retry_after else []
        await self._respond(error.status, error.code, str(error), headers)

    async def _respond(self, status: int, code: str, message: str, headers: list[tuple[bytes, bytes]]) -> None:
        self.status, self.error_code = status, code
        kept = [(k, v) for k, v in headers if k.lower() not in {b"content-length", b"content-type"}]
        retry_after = next((v for k, v in kept if k.lower() == b"retry-after"), None)
        if status in (429, 503) and retry_after is None:
            retry_after = b"1"
            kept.append((b"retry-after", retry_after))
        payload = error_body(code, message, self.request_id)
        if retry_after is not None:  # also in the body, for clients that do not expose headers
            payload["error"]["retry_after"] = int(retry_after)
        body = json.dumps(payload).encode()
        kept += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await self._send({"type": "http.response.start", "status": status, "headers": self._headers(kept)})
        await self._send({"type": "http.response.body", "body": body})

    def _headers(self, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        extra = [(b"x-request-id", self.request_id.encode())]
        if self.api:
            extra += _SECURITY_HEADERS
        return [*headers, *extra]


class _Rewrite:
    """A `send` that parses a JSON answer, passes it through `transform`, and sends the result."""

    def __init__(self, send: Send, transform: Callable[[Any], Any]) -> None:
        self._send = send
        self.transform = transform
        self._start: Message | None = None
        self._chunks: list[bytes] = []

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self._start = message
            return
        self._chunks.append(message.get("body", b""))
        if message.get("more_body", False) or self._start is None:
            return
        body = b"".join(self._chunks)
        if self._start["status"] == 200:
            body = json.dumps(self.transform(json.loads(body))).encode()
        headers = [(k, v) for k, v in self._start.get("headers", []) if k.lower() != b"content-length"]
        await self._send({**self._start, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
        await self._send({"type": "http.response.body", "body": body})


def _conform(status: int, body: bytes) -> tuple[str, str]:
    """(code, message) for an error answer made by our handlers or by the framework."""
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("error"), dict) and "code" in data["error"]:
        return data["error"]["code"], str(data["error"].get("message", ""))
    code = _CODES.get(status, "INTERNAL" if status >= 500 else "BAD_REQUEST")
    if code == "INTERNAL":
        return code, INTERNAL_MESSAGE
    if isinstance(data, dict) and isinstance(data.get("detail"), list):
        return code, "; ".join(_describe_validation(d) for d in data["detail"]) or str(data.get("error"))
    if isinstance(data, dict) and isinstance(data.get("error"), str):
        return code, data["error"]
    if isinstance(data, dict) and isinstance(data.get("detail"), str):
        return code, data["detail"]
    if isinstance(data, list) and data and isinstance(data[0], dict) and "error" in data[0]:
        return code, str(data[0]["error"])
    return code, f"request failed with HTTP {status}"


def _describe_validation(detail: Any) -> str:
    if not isinstance(detail, dict):
        return str(detail)
    where = ".".join(str(p) for p in detail.get("loc", ()))
    return f"{where}: {detail.get('msg', 'invalid')}" if where else str(detail.get("msg", "invalid"))


def _request_id(headers: Headers) -> str:
    for name in ("x-request-id", "x-correlation-id"):
        value = headers.get(name, "")
        if _WELL_FORMED_ID.fullmatch(value):
            return value
    return uuid.uuid4().hex


def _empty_json(scope: Scope) -> Scope:
    """The same request, declaring an empty JSON body."""
    headers = [(k, v) for k, v in scope["headers"] if k not in (b"content-type", b"content-length")]
    return {**scope, "headers": [*headers, (b"content-type", b"application/json"), (b"content-length", b"2")]}


def _names(fields: set[str]) -> str:
    return ", ".join(repr(f) for f in sorted(fields)) or "no form fields"


def _replay(body: bytes, receive: Receive | None) -> Receive:
    """A receive() that yields the buffered body once, then defers to the real one (disconnects)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        if receive is None:
            return {"type": "http.disconnect"}
        return await receive()

    return replay
