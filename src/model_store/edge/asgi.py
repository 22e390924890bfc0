"""ASGI types and the few helpers the edge's parts share."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Probes and scrapes: no API key, not counted as requests (the /v2 pair is the Open Inference Protocol's).
PROBES = frozenset({"/livez", "/readyz", "/healthz", "/metrics", "/v2/health/live", "/v2/health/ready"})
REQUEST_ID_KEY = "pyramidnet.request_id"  # BentoML's own middleware writes scope["request_id"]
# Filled by the edge's parts as a request passes (scope dicts get copied; this one is shared).
FACTS = "pyramidnet.facts"


def facts(scope: Scope) -> dict[str, Any]:
    """What the edge learnt about this request so far: error code, image count (for the access log)."""
    return scope.setdefault(FACTS, {})


def replay(body: bytes, receive: Receive) -> Receive:
    """A receive() that yields `body` once, then defers to the real one (disconnects)."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed
