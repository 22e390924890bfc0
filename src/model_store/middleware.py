"""ASGI middleware for the API routes: a bounded body, only the declared multipart file fields,
and every error answer in one shape, `{"error": {"code": ..., "message": ...}}`.

BentoML answers its own validation failures with `{"error": str, "detail": [...]}` and turns a
file part under an unknown field name into a 500 (it JSON-decodes the bytes); both are handled
here, before and after the framework, so that no bad upload reaches a 500.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException
from starlette.requests import Request

from .errors import ClientError, PayloadTooLarge, ValidationFailed, error_body

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# The code a framework-made error answer gets, by status.
STATUS_CODES = {
    400: "VALIDATION_ERROR",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    422: "VALIDATION_ERROR",
    429: "RATE_LIMITED",
    500: "INTERNAL",
    503: "OVERLOADED",
    504: "TIMEOUT",
}
INTERNAL_MESSAGE = "the server failed to process the request; it has been logged"


class ErrorContract:
    """Guards the routes in `file_fields` (route -> the multipart file field names it accepts)."""

    def __init__(self, app: ASGIApp, *, file_fields: Mapping[str, set[str]], max_request_bytes: int) -> None:
        self.app = app
        self.file_fields = file_fields
        self.max_request_bytes = max_request_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in self.file_fields:
            await self.app(scope, receive, send)
            return
        try:
            body = await self._read_body(receive)
            await self._check_multipart(scope, body, self.file_fields[scope["path"]])
        except ClientError as e:
            await send_json(send, e.status, error_body(e.code, str(e)))
            return
        await self.app(scope, _replay(body, receive), _ConformingSend(send))

    async def _read_body(self, receive: Receive) -> bytes:
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_request_bytes:
                raise PayloadTooLarge(f"request body exceeds {self.max_request_bytes:,} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    @staticmethod
    async def _check_multipart(scope: Scope, body: bytes, expected: set[str]) -> None:
        request = Request(scope, _replay(body, None))
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            return  # the framework's own validation answers other bodies
        try:
            form = await request.form()
        except MultiPartException as e:
            raise ValidationFailed(f"malformed multipart body: {e.message}") from None
        try:
            for name, value in form.multi_items():
                if name not in expected:
                    raise ValidationFailed(
                        f"unexpected form field {name!r}; this endpoint takes {_names(expected)}"
                    )
                if not isinstance(value, UploadFile):
                    raise ValidationFailed(
                        f"form field {name!r} must be a file upload (URLs and text are not accepted)"
                    )
        finally:
            await form.close()


class _ConformingSend:
    """Holds back an error answer's body and rewrites it into the contract if it is not already."""

    def __init__(self, send: Send) -> None:
        self.send = send
        self.start: Message | None = None
        self.chunks: list[bytes] = []

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start" and message["status"] >= 400:
            self.start = message
            return
        if self.start is None:
            await self.send(message)
            return
        self.chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            status = self.start["status"]
            body = _conform(status, b"".join(self.chunks))
            headers = [(k, v) for k, v in self.start.get("headers", []) if k.lower() != b"content-length"]
            headers.append((b"content-length", str(len(body)).encode()))
            await self.send({**self.start, "headers": headers})
            await self.send({"type": "http.response.body", "body": body})


def _conform(status: int, body: bytes) -> bytes:
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("error"), dict) and "code" in data["error"]:
        return body
    code = STATUS_CODES.get(status, "INTERNAL" if status >= 500 else "BAD_REQUEST")
    if status >= 500 and code == "INTERNAL":
        message = INTERNAL_MESSAGE
    elif isinstance(data, dict) and isinstance(data.get("detail"), list):
        message = "; ".join(_describe_validation(d) for d in data["detail"]) or str(data.get("error"))
    elif isinstance(data, dict) and isinstance(data.get("error"), str):
        message = data["error"]
    elif isinstance(data, list) and data and isinstance(data[0], dict) and "error" in data[0]:
        message = str(data[0]["error"])
    else:
        message = f"request failed with HTTP {status}"
    return json.dumps(error_body(code, message)).encode()


def _describe_validation(detail: Any) -> str:
    if not isinstance(detail, dict):
        return str(detail)
    where = ".".join(str(p) for p in detail.get("loc", ()))
    return f"{where}: {detail.get('msg', 'invalid')}" if where else str(detail.get("msg", "invalid"))


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


async def send_json(send: Send, status: int, payload: dict[str, Any]) -> None:
    body = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
