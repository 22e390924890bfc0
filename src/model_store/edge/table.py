"""The route table of this service: each route the service answers, with its kind, its files and
limits, and what it answers (edge/routes.py says what each kind means to the edge).

Adding a route: its entry here, and its handler (a `bentoml.api` in service.py, or a route of the
Open Inference Protocol's app in edge/oip.py). Nothing else: every part of the edge reads the entry,
and the service refuses to start when a handler has no entry or an API entry no handler.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from bentoml.validators import ContentType
from pydantic import Field

from ..errors import ModelUnavailable, NotReady
from ..oip import InferLimits
from ..schemas import ModelInfo, Prediction, Predictions
from ..settings import Settings
from .forms import UploadedForm, form_fields
from .routes import Kind, Route, RouteTable

OIP_PREFIX = "/v2"


class ClassifyInput(UploadedForm):
    image: Annotated[Path, ContentType("image/*")] = Field(description="one image file")


class ClassifyBatchInput(UploadedForm):
    images: list[Annotated[Path, ContentType("image/*")]] = Field(description="image files, answered in this order")


class ClassifyJsonInput(UploadedForm):
    # Bodies decodes the body ({"images": [...]} or {"instances": [{"b64": ...}]}, schemas.py) into uploads.
    images: list[str] = Field(description="image files in base64, answered in this order")


def service_routes(settings: Settings, model: str, version: str, input_size: int) -> RouteTable:
    """This service's routes, for `model` at `version` (the Open Inference Protocol names them)."""
    most = settings.max_images_per_request
    limits = InferLimits(most, settings.max_file_bytes, (3, input_size, input_size))
    v2 = OIP_PREFIX
    models = [f"{v2}/models/{model}", f"{v2}/models/{model}/versions/{version}"]
    return RouteTable(
        [
            Route("/classify", Kind.FILES, form_fields(ClassifyInput, most), answer=Prediction),
            Route("/classify_batch", Kind.FILES, form_fields(ClassifyBatchInput, most), answer=list[Prediction]),
            Route("/classify_json", Kind.BASE64, {"images": most}, answer=Predictions),
            Route("/model_info", Kind.QUERY, answer=ModelInfo),
            Route(v2, Kind.PROTOCOL, protocol=True),
            *(Route(path, Kind.PROTOCOL, protocol=True) for path in models),
            *(Route(f"{path}/ready", Kind.PROTOCOL, protocol=True) for path in models),
            *(Route(f"{path}/infer", Kind.INFER, infer=limits, protocol=True) for path in models),
            Route(f"{v2}/", Kind.PROTOCOL, protocol=True),  # other models and versions: MODEL_NOT_FOUND
            Route(f"{v2}/health/live", Kind.PROBE, unready=ModelUnavailable, protocol=True),
            Route(f"{v2}/health/ready", Kind.PROBE, unready=NotReady, protocol=True),
            Route("/livez", Kind.PROBE, unready=ModelUnavailable),
            Route("/healthz", Kind.PROBE, unready=ModelUnavailable),
            Route("/readyz", Kind.PROBE, unready=NotReady),
            Route("/metrics", Kind.METRICS),
            Route("/", Kind.DOCS),
            Route("/docs", Kind.DOCS),
            Route("/docs.json", Kind.DOCS),
            Route("/static_content/", Kind.DOCS),
        ]
    )
