"""The API's documentation as served: an OpenAPI document with a real title and the error
contract, and a Swagger UI page built from assets on this server only (BentoML's own page loads
Google Tag Manager from the internet, which an air-gapped cluster cannot reach and which tells a
third party about every visit; its Swagger UI would also fetch a validator badge from swagger.io)."""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable
from typing import Any

from pydantic import TypeAdapter

from .. import __version__
from ..errors import ALL_ERRORS, ApiError, ModelNotFound, NotReady
from ..oip import (
    HEADER_LENGTH,
    InferenceRequest,
    InferenceResponse,
    Liveness,
    ModelMetadata,
    ModelReadiness,
    OipError,
    Readiness,
    ServerMetadata,
)
from ..schemas import ErrorResponse
from .examples import EXAMPLES
from .forms import JsonBody, raw_field
from .routes import Kind, RouteTable
from .table import OIP_PREFIX as PREFIX

TITLE = "PyramidNet-110 CIFAR-10 classifier"
DESCRIPTION = (
    "Classifies images into the ten CIFAR-10 classes with a PyramidNet-110 (alpha 48). POST image files as "
    "multipart/form-data: one to /classify (or there as the whole body, with an image/* Content-Type), up to the "
    "batch limit to /classify_batch; or as base64 in JSON to /classify_json. /model_info says which model answers "
    "and the limits in force. Every error answer is "
    '`{"error": {"code", "message"}, "request_id"}` with a stable code, listed under each endpoint. '
    "Under /v2 the same model speaks the Open Inference Protocol (KServe v2: Triton's and KServe's clients), "
    'whose error answers are `{"error": "<message>", "code", "request_id"}`.'
)
PAGE = f"""<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="UTF-8">
  <title>{TITLE}</title>
  <link rel="stylesheet" type="text/css" href="/static_content/swagger-ui.css">
  <link rel="icon" type="image/png" href="/static_content/favicon-light-32x32.png" sizes="32x32">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/static_content/swagger-ui-bundle.js" charset="UTF-8"></script>
  <script src="/static_content/swagger-ui-standalone-preset.js" charset="UTF-8"></script>
  <script>
    window.ui = SwaggerUIBundle({{
      url: "/docs.json", dom_id: "#swagger-ui", deepLinking: true, validatorUrl: null,
      presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset], layout: "StandaloneLayout",
    }});
  </script>
</body>
</html>
""".encode()
# BentoML's tag names, described for this service (BentoML's own texts describe any service).
TAGS = {
    "Service APIs": "Classify images, and describe the model that answers and the limits in force",
    "Infrastructure": "Liveness and readiness probes for the orchestrator, and Prometheus metrics",
    "Open Inference Protocol": "The KServe v2 REST protocol (Triton, KServe, MLServer clients): health, "
    "metadata and inference of the served model, by name and by name and version",
}
OIP_TAG = "Open Inference Protocol"
# The protocol's routes answer every error the others do, and an unknown model, and (readiness) NOT_READY.
OIP_ERRORS = (*ALL_ERRORS, ModelNotFound, NotReady)


class Document:
    """The OpenAPI document BentoML emits, rewritten for the routes of `routes` (see `document`);
    `oip_model`: (name, version) of the model the Open Inference Protocol's routes serve."""

    def __init__(self, routes: RouteTable, oip_model: tuple[str, str] | None = None) -> None:
        self.routes = routes
        self.oip_model = oip_model

    def __call__(self, body: bytes) -> bytes:
        return json.dumps(document(json.loads(body), self.routes, self.oip_model)).encode()


def document(spec: dict[str, Any], routes: RouteTable, oip_model: tuple[str, str] | None = None) -> dict[str, Any]:
    """BentoML's document, with what BentoML cannot be told: the title and description, the
    ErrorResponse schema, and on every API route of `routes` one response per error status with the
    codes it can carry. From each route's entry: the type it answers 200 with, whose schema replaces
    BentoML's (which drops `null` from optional fields, so a client generated from it rejects
    `"warning": null`); a FILES route's file fields and how many files each takes (the body is
    required, a list field holds 1 to that many, and a route of one file takes it as a raw image
    body as well); a BASE64 route's JsonBody; a QUERY route's lack of a body. `oip_model`: (name,
    version) of the model the Open Inference Protocol's routes serve."""
    api = routes.of(Kind.FILES, Kind.BASE64, Kind.QUERY)
    answers = {route.path: route.answer for route in api if route.answer is not None}
    fields = {route.path: route.files for route in routes.of(Kind.FILES, Kind.QUERY)}
    json_routes = [route.path for route in routes.of(Kind.BASE64)]
    info = spec.setdefault("info", {})
    info.update(title=TITLE, description=DESCRIPTION, version=__version__)
    info.pop("contact", None)  # BentoML's team, who do not answer for this service
    spec["tags"] = [
        {**tag, "description": TAGS.get(tag["name"], tag.get("description"))} for tag in spec.get("tags", [])
    ]
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    schemas["ErrorResponse"] = ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(schemas["ErrorResponse"].pop("$defs", {}))
    for route, answer in answers.items():
        operation = spec.get("paths", {}).get(route, {}).get("post")
        if operation is not None:
            content = operation["responses"]["200"].setdefault("content", {})
            content["application/json"] = {"schema": _component(schemas, answer)}
    for name in [name for name in schemas if name.endswith("IODescriptor")]:  # BentoML's, replaced above
        del schemas[name]
    for route, files in fields.items():
        operation = spec.get("paths", {}).get(route, {}).get("post", {})
        if "requestBody" not in operation:
            continue
        if not files:  # Bodies hands such a route an empty object whatever was sent: it takes no body
            del operation["requestBody"]
            continue
        operation["requestBody"]["required"] = True
        content = operation["requestBody"].setdefault("content", {})
        for form in content.values():
            form.get("schema", {})["additionalProperties"] = False  # Bodies refuses any other field
            for name, most in files.items():
                field = form.get("schema", {}).get("properties", {}).get(name, {})
                if field.get("type") == "array":
                    field.update(minItems=1, maxItems=most)
        if raw_field(files) is not None:  # Bodies takes the one image as the whole body too
            content["image/*"] = {"schema": {"type": "string", "format": "binary"}}
    for route in json_routes:
        operation = spec.get("paths", {}).get(route, {}).get("post")
        if operation is not None:
            schema = _component(schemas, JsonBody)
            body = {"schema": schema, "example": EXAMPLES["ImagesRequest"]}
            operation["requestBody"] = {"required": True, "content": {"application/json": body}}
    by_status = _codes_by_status(ALL_ERRORS)
    for api_route in api:
        operation = spec.get("paths", {}).get(api_route.path, {}).get("post")
        if operation is None:
            continue
        responses = operation.setdefault("responses", {})
        for status, codes in sorted(by_status.items()):
            responses[str(status)] = _error_answer(
                status, "error.code: " + ", ".join(codes), {"$ref": "#/components/schemas/ErrorResponse"}
            )
    if oip_model is not None:
        spec.setdefault("paths", {}).update(oip_paths(schemas, *oip_model))
        spec["tags"].append({"name": OIP_TAG, "description": TAGS[OIP_TAG]})
    _prune(schemas, spec)
    for name, example in EXAMPLES.items():
        if name in schemas:
            schemas[name]["example"] = example
    return spec


def oip_paths(schemas: dict[str, Any], name: str, version: str) -> dict[str, Any]:
    """The Open Inference Protocol's routes (edge/oip.py) for model `name` at `version`."""
    errors = _component(schemas, OipError)
    by_status = _codes_by_status(OIP_ERRORS)

    def operation(summary: str, answer: Any, statuses: Collection[int], **more: Any) -> dict[str, Any]:
        responses: dict[str, Any] = {"200": {"description": "OK", "content": {"application/json": {"schema": answer}}}}
        for status in statuses:
            responses[str(status)] = _error_answer(status, "code: " + ", ".join(by_status[status]), errors)
        return {"tags": [OIP_TAG], "summary": summary, "responses": responses, **more}

    def answer(model: Any) -> dict[str, Any]:
        return _component(schemas, model)

    binary = {"type": "string", "format": "binary", "description": "the JSON, then the tensors' bytes"}
    infer = operation(
        "Inference: images (BYTES [N], encoded files) or pixels (FP32 [N, 3, H, W], preprocessed) -> "
        "probabilities (FP32 [N, classes]; asked for classification: k, the top k as BYTES)",
        answer(InferenceResponse),
        (400, 401, 404, 413, 415, 503, 504),
        requestBody={
            "required": True,
            "content": {
                "application/json": {"schema": answer(InferenceRequest), "example": EXAMPLES["InferenceRequest"]},
                "application/octet-stream": {"schema": binary},
            },
        },
        parameters=[
            {
                "name": HEADER_LENGTH.title(),
                "in": "header",
                "required": False,
                "description": "binary tensor data extension: the length of the JSON that starts the body",
                "schema": {"type": "integer", "minimum": 0},
            },
            {
                "name": "Content-Encoding",
                "in": "header",
                "required": False,
                "description": "a compressed body (tritonclient's request_compression_algorithm)",
                "schema": {"type": "string", "enum": ["gzip", "deflate", "identity"]},
            },
        ],
    )
    infer["responses"]["200"]["content"]["application/octet-stream"] = {"schema": binary}
    paths = {
        PREFIX: {"get": operation("Server metadata: name, version, extensions", answer(ServerMetadata), (401,))},
        f"{PREFIX}/health/live": {"get": operation("Liveness (as /livez)", answer(Liveness), (503,))},
        f"{PREFIX}/health/ready": {"get": operation("Readiness (as /readyz)", answer(Readiness), (503,))},
    }
    for model in (f"{PREFIX}/models/{name}", f"{PREFIX}/models/{name}/versions/{version}"):
        paths[model] = {"get": operation("Model metadata: inputs and outputs", answer(ModelMetadata), (401,))}
        paths[f"{model}/ready"] = {"get": operation("Model readiness", answer(ModelReadiness), (401, 503))}
        paths[f"{model}/infer"] = {"post": infer}
    return paths


def _codes_by_status(errors: Iterable[type[ApiError]]) -> dict[int, list[str]]:
    by_status: dict[int, list[str]] = {}
    for error in errors:
        by_status.setdefault(error.status, []).append(error.code)
    return by_status


def _error_answer(status: int, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    """An error response of the document: its codes, its body's schema, and a 503's Retry-After."""
    response: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": schema}}}
    if status == 503:
        response["headers"] = {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}}
    return response


def _prune(schemas: dict[str, Any], spec: dict[str, Any]) -> None:
    """Drop the schemas nothing refers to any more (BentoML's, for the bodies and answers replaced)."""
    while unused := [
        name
        for name in schemas
        if f'"#/components/schemas/{name}"'
        not in json.dumps({k: v for k, v in spec.items() if k != "components"})
        + json.dumps({k: v for k, v in schemas.items() if k != name})
    ]:
        for name in unused:
            del schemas[name]


def _component(schemas: dict[str, Any], answer: Any) -> dict[str, Any]:
    """The JSON schema of `answer` (a pydantic model, or a list of one), its models as components."""
    schema = TypeAdapter(answer).json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(schema.pop("$defs", {}))
    if schema.get("type") == "object" and "title" in schema:  # a model: a component of its own
        schemas[schema["title"]] = schema
        return {"$ref": f"#/components/schemas/{schema['title']}"}
    return schema
