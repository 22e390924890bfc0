"""Every HTTP request gets an id, for the client, the logs and the error body, and its arrival
time is noted (admission counts the wait since)."""

from __future__ import annotations

import re
import time
import uuid

from starlette.datastructures import Headers

from ..logs import REQUEST_ID
from .asgi import REQUEST_ID_KEY, ASGIApp, Message, Receive, Scope, Send, facts

_WELL_FORMED = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
# BentoML's own id header is an OpenTelemetry span id that none of our log lines carries:
# answering with it beside ours would give a client two ids and only one that finds anything.
_DROPPED = (b"x-bentoml-request-id", b"x-request-id")


class RequestId:
    """The client's `X-Request-ID` (or `X-Correlation-ID`) when well-formed, else a new one: in
    `scope[REQUEST_ID_KEY]`, in the logging context, and as the only request-id header answered.
    The outermost part: the time it sees a request is the request's `arrived` fact."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        facts(scope)["arrived"] = time.monotonic()
        request_id = choose(Headers(scope=scope))
        scope[REQUEST_ID_KEY] = request_id
        header = (b"x-request-id", request_id.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in _DROPPED]
                message = {**message, "headers": [*kept, header]}
            await send(message)

        token = REQUEST_ID.set(request_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            REQUEST_ID.reset(token)


def choose(headers: Headers) -> str:
    for name in ("x-request-id", "x-correlation-id"):
        value = headers.get(name, "")
        if _WELL_FORMED.fullmatch(value):
            return value
    return uuid.uuid4().hex
