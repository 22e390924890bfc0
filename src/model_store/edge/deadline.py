"""A time limit on the API routes' answers."""

from __future__ import annotations

import asyncio
from collections.abc import Collection

from ..errors import Timeout
from .asgi import ASGIApp, Message, Receive, Scope, Send


class Deadline:
    """504 TIMEOUT when an API route has not begun its answer within `timeout_s`."""

    def __init__(self, app: ASGIApp, *, routes: Collection[str], timeout_s: float) -> None:
        self.app = app
        self.routes = frozenset(routes)
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in self.routes:
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            await asyncio.wait_for(self.app(scope, receive, watch), self.timeout_s)
        except TimeoutError:
            if started:
                raise  # the answer has begun; nothing sane is left to send
            raise Timeout(f"no answer within {self.timeout_s:g} s") from None
