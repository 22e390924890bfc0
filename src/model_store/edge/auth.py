"""API-key authentication, when keys are configured."""

from __future__ import annotations

import hmac

from starlette.datastructures import Headers

from ..errors import Unauthorized
from .asgi import PROBES, ASGIApp, Receive, Scope, Send


class ApiKeys:
    """Every request but probes, metrics and CORS preflights needs one of `keys`, as
    `Authorization: Bearer <key>` or `X-API-Key: <key>`; no keys means authentication is off."""

    def __init__(self, app: ASGIApp, *, keys: list[bytes]) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        guarded = self.keys and scope["type"] == "http" and scope["path"] not in PROBES and scope["method"] != "OPTIONS"
        if guarded and not self.accepts(Headers(scope=scope)):
            raise Unauthorized("a valid API key is required: 'Authorization: Bearer <key>' or 'X-API-Key: <key>'")
        await self.app(scope, receive, send)

    def accepts(self, headers: Headers) -> bool:
        authorization = headers.get("authorization", "")
        offered = headers.get("x-api-key") or (authorization[7:] if authorization[:7].lower() == "bearer " else "")
        # Compare against every key, always, so timing says nothing about which or how much matched.
        matched = False
        for key in self.keys:
            matched |= hmac.compare_digest(offered.encode(), key)
        return matched
