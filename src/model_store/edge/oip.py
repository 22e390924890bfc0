"""The Open Inference Protocol's routes (model_store.oip), an ASGI app the API service mounts.

Health, server and model metadata, model readiness, and inference, for the one model this server
serves, by its name and its version. The body of an inference request is read and parsed by the
edge (edge/forms.py, so that admission knows how many images it carries before admitting it); the
route finds it in the request scope. Errors are raised as ApiErrors and rendered in the protocol's
shape (`{"error": "..."}`, with the code and request id beside it: edge/contract.py). Each path is
an entry of the route table (edge/table.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .. import __version__
from ..errors import ModelNotFound, ModelUnavailable, NotReady
from ..oip import InferRequest, encode_infer, model_metadata, server_metadata
from ..spec import ModelSpec
from .contract import answers_errors
from .forms import INFER
from .table import OIP_PREFIX as PREFIX


class Served(Protocol):
    """What the routes need of the service that mounts them."""

    spec: ModelSpec

    async def is_live(self) -> bool: ...

    async def is_ready(self) -> bool: ...

    async def probabilities(self, request: InferRequest) -> np.ndarray: ...


def oip_app(name: str, version: str, served: Callable[[], Served]) -> Starlette:
    """The routes, for model `name` at `version`; `served()` is the service instance (called per request)."""

    def model(request: Request) -> None:
        asked, at = request.path_params["model"], request.path_params.get("version")
        if asked != name or at not in (None, version):
            raise ModelNotFound(
                f"no model {asked[:80]!r}{f' version {at[:80]!r}' if at else ''} here; "
                f"this server serves {name!r}, version {version!r}"
            )

    @answers_errors
    async def server(request: Request) -> Response:
        return JSONResponse(server_metadata(__version__))

    @answers_errors
    async def live(request: Request) -> Response:
        if not await served().is_live():
            raise ModelUnavailable()
        return JSONResponse({"live": True})

    @answers_errors
    async def ready(request: Request) -> Response:
        if not await served().is_ready():
            raise NotReady()
        return JSONResponse({"ready": True})

    @answers_errors
    async def metadata(request: Request) -> Response:
        model(request)
        return JSONResponse(model_metadata(name, version, served().spec))

    @answers_errors
    async def model_ready(request: Request) -> Response:
        model(request)
        if not await served().is_ready():
            raise NotReady()
        return JSONResponse({"name": name, "ready": True})

    @answers_errors
    async def infer(request: Request) -> Response:
        model(request)
        parsed: InferRequest = request.scope[INFER]  # only the served model's paths reach here parsed
        service = served()
        probabilities = await service.probabilities(parsed)
        body, headers = encode_infer(parsed, probabilities, name, version, service.spec.classes)
        return Response(body, headers=headers)

    model_paths = [f"{PREFIX}/models/{{model}}", f"{PREFIX}/models/{{model}}/versions/{{version}}"]
    return Starlette(
        routes=[
            Route(PREFIX, server, methods=["GET"]),
            Route(f"{PREFIX}/health/live", live, methods=["GET"]),
            Route(f"{PREFIX}/health/ready", ready, methods=["GET"]),
            *(Route(path, metadata, methods=["GET"]) for path in model_paths),
            *(Route(f"{path}/ready", model_ready, methods=["GET"]) for path in model_paths),
            *(Route(f"{path}/infer", infer, methods=["POST"]) for path in model_paths),
        ]
    )
