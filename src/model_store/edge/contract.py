"""Every error answer in one shape, whoever made it: the edge's parts, the routes, or the framework."""

from __future__ import annotations

import json
import logging
from typing import Any

from ..bentoml_internals import framework_error_message
from ..errors import CODES, INTERNAL_MESSAGE, ApiError, Internal, ModelUnavailable, NotReady, Overloaded, error_body
from ..oip import OipError
from .asgi import REQUEST_ID_KEY, ASGIApp, Message, Receive, Scope, Send, facts

log = logging.getLogger("pyramidnet.edge")

# What the framework's 503 on a probe means: __is_ready__ or __is_alive__ returned False.
PROBE_ERRORS: dict[str, type[ApiError]] = {
    "/readyz": NotReady,
    "/livez": ModelUnavailable,
    "/healthz": ModelUnavailable,
}


class ErrorContract:
    """An ApiError raised inside becomes its answer; any other error answer from inside (BentoML's
    validation errors, 404, 405, 500) is rewritten into `{"error": {"code", "message"}, "request_id"}`
    with the code its status implies; 503s always carry Retry-After, and OVERLOADED closes its
    connection (so a retry may reach another pod). Under `oip_prefix` (the Open
    Inference Protocol's routes) the same answer takes that protocol's shape:
    `{"error": "<message>", "code", "request_id"}`."""

    def __init__(self, app: ASGIApp, *, oip_prefix: str | None = None) -> None:
        self.app = app
        self.oip_prefix = oip_prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, prefix = scope["path"], self.oip_prefix
        rewrite = _Rewrite(scope, send, oip=prefix is not None and (path == prefix or path.startswith(f"{prefix}/")))
        try:
            await self.app(scope, receive, rewrite)
        except Exception as e:
            if rewrite.started:
                raise  # part of an answer is on the wire: nothing sane is left to send
            if not isinstance(e, ApiError):
                log.exception("unhandled error in %s %s", scope["method"], scope["path"])
                e = Internal(INTERNAL_MESSAGE)
            await rewrite.answer(e.status, e.code, str(e), e.retry_after)


class _Rewrite:
    """The `send` inside ErrorContract: passes success through, holds an error answer's start
    until its body is complete, then sends the contract's body instead."""

    def __init__(self, scope: Scope, send: Send, *, oip: bool) -> None:
        self.scope, self.send, self.oip = scope, send, oip
        self.started = False
        self._held: Message | None = None
        self._chunks: list[bytes] = []

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start" and message["status"] >= 400:
            self._held = message
            return
        if self._held is None:
            self.started = True
            await self.send(message)
            return
        self._chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            held, self._held = self._held, None
            headers = {k.decode().lower(): v.decode() for k, v in held.get("headers", [])}
            code, text, retry_after = conform(held["status"], b"".join(self._chunks), self.scope, headers)
            await self.answer(held["status"], code, text, retry_after, allow=headers.get("allow"))

    async def answer(
        self, status: int, code: str, message: str, retry_after: int | None, allow: str | None = None
    ) -> None:
        """The contract's answer; `allow`: a 405's methods, which RFC 9110 has it carry in `Allow`."""
        if status == 503 and retry_after is None:
            retry_after = 1
        facts(self.scope)["error_code"] = code
        request_id = self.scope.get(REQUEST_ID_KEY)
        if self.oip:
            shaped = OipError(error=message, code=code, request_id=request_id, retry_after=retry_after)
            body = shaped.model_dump_json(exclude_none=True).encode()
        else:
            body = json.dumps(error_body(code, message, request_id, retry_after)).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if retry_after is not None:
            headers.append((b"retry-after", str(retry_after).encode()))
        if status == 405 and allow:
            headers.append((b"allow", allow.encode()))
        if code == Overloaded.code:
            # A Kubernetes Service balances connections, not requests: closing this one lets the
            # client's retry open a new connection, which may land on a less busy pod.
            headers.append((b"connection", b"close"))
        self.started = True
        await self.send({"type": "http.response.start", "status": status, "headers": headers})
        await self.send({"type": "http.response.body", "body": body})


def conform(status: int, body: bytes, scope: Scope, headers: dict[str, str]) -> tuple[str, str, int | None]:
    """(code, message, retry_after) for an error answer made inside the edge."""
    try:
        data: Any = json.loads(body)
    except ValueError:
        data = None
    retry_after = int(headers["retry-after"]) if headers.get("retry-after", "").isdigit() else None
    if isinstance(data, dict) and isinstance(data.get("error"), dict) and "code" in data["error"]:
        return data["error"]["code"], str(data["error"].get("message", "")), retry_after  # ours already
    if status == 503 and (probe := PROBE_ERRORS.get(scope["path"])):
        return probe.code, str(probe()), probe.retry_after
    code = CODES.get(status, "INTERNAL" if status >= 500 else "VALIDATION_ERROR")
    if status >= 500:
        return code, INTERNAL_MESSAGE, retry_after
    if status == 404:
        return code, f"no route {scope['method']} {scope['path']}", None
    if status == 405:
        allowed = headers.get("allow", "another method")
        return code, f"{scope['method']} {scope['path']} is not allowed: use {allowed}", None
    return code, framework_error_message(data) or f"request failed with HTTP {status}", retry_after
