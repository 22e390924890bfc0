"""Every error answer in one shape, rendered once, with the request id already in it.

`render` makes the answer of an ApiError, whoever raised it: the edge (edge/hall.py sends it) or a
route (`answers_errors` returns it as the route's response). Either way the request's context
learns its code, so the edge passes the answer on untouched. Only an error answer the framework
made itself (BentoML's validation errors, 404, 405, 500) is read back, by `conform`, and rendered
in the contract's shape. The shape is `{"error": {"code", "message"}, "request_id"}`, or under the
Open Inference Protocol's routes `{"error": "<message>", "code", "request_id"}`; 503s carry
Retry-After, and OVERLOADED closes its connection (so a retry may reach another pod).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

from starlette.responses import Response

from ..bentoml_internals import framework_error_message
from ..errors import CODES, INTERNAL_MESSAGE, ApiError, Overloaded, error_body
from ..oip import OipError
from .context import current
from .routes import Route

Headers = dict[str, str]


def render(
    status: int, code: str, message: str, retry_after: int | None = None, allow: str | None = None
) -> tuple[Headers, bytes]:
    """The headers and body of an error answer to the current request; `allow`: a 405's methods,
    which RFC 9110 has it carry in `Allow`."""
    ctx = current()
    if status == 503 and retry_after is None:
        retry_after = 1
    request_id = None
    if ctx is not None:
        ctx.code, ctx.rendered, request_id = code, status, ctx.request_id
    if ctx is not None and ctx.route.protocol:
        shaped = OipError(error=message, code=code, request_id=request_id, retry_after=retry_after)
        body = shaped.model_dump_json(exclude_none=True).encode()
    else:
        body = json.dumps(error_body(code, message, request_id, retry_after)).encode()
    headers = {"content-type": "application/json"}
    if retry_after is not None:
        headers["retry-after"] = str(retry_after)
    if status == 405 and allow:
        headers["allow"] = allow
    if code == Overloaded.code:
        # A Kubernetes Service balances connections, not requests: closing this one lets the
        # client's retry open a new connection, which may land on a less busy pod.
        headers["connection"] = "close"
    return headers, body


def render_error(error: ApiError) -> tuple[Headers, bytes]:
    return render(error.status, error.code, str(error), error.retry_after)


P = ParamSpec("P")
R = TypeVar("R")


def answers_errors(route: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R | Response]]:
    """A route whose ApiErrors become their answers (rendered here, once), rather than the
    framework's 500s."""

    @functools.wraps(route)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R | Response:
        try:
            return await route(*args, **kwargs)
        except ApiError as e:
            headers, body = render_error(e)
            return Response(body, status_code=e.status, headers=headers)

    return wrapper


def conform(
    status: int, body: bytes, route: Route, method: str, path: str, headers: Headers
) -> tuple[str, str, int | None]:
    """(code, message, retry_after) of an error answer the framework made."""
    retry_after = int(headers["retry-after"]) if headers.get("retry-after", "").isdigit() else None
    if status == 503 and route.unready is not None:
        return route.unready.code, str(route.unready()), route.unready.retry_after
    code = CODES.get(status, "INTERNAL" if status >= 500 else "VALIDATION_ERROR")
    if status >= 500:
        return code, INTERNAL_MESSAGE, retry_after
    if status == 404:
        return code, f"no route {method} {path[:80]}", None
    if status == 405:
        return code, f"{method} {path[:80]} is not allowed: use {headers.get('allow', 'another method')}", None
    try:
        data: Any = json.loads(body)
    except ValueError:
        data = None
    return code, framework_error_message(data) or f"request failed with HTTP {status}", retry_after
