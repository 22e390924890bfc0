"""One JSON log line per request (probes and metrics scrapes aside)."""

from __future__ import annotations

import logging
import time

from .asgi import PROBES, REQUEST_ID_KEY, ASGIApp, Message, Receive, Scope, Send, facts

log = logging.getLogger("pyramidnet.access")


class AccessLog:
    """Logs request id, method, route, status, error code, latency and image count of each request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PROBES:
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), None
        learnt = facts(scope)

        async def observe(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observe)
        finally:
            log.info(
                "request",
                extra={
                    "request_id": scope.get(REQUEST_ID_KEY),
                    "method": scope["method"],
                    "route": scope["path"],
                    "status": status,
                    "error_code": learnt.get("error_code"),
                    "latency_ms": round((time.perf_counter() - started) * 1000, 2),
                    "images": learnt.get("images", 0),
                },
            )
