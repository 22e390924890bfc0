"""Typed results of the service (pydantic): what clients receive, documented in the OpenAPI schema;
and the JSON bodies it takes."""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from pydantic.config import JsonDict

from .spec import ModelSpec


class Prediction(BaseModel):
    label: str = Field(description="most probable class name")
    class_id: int = Field(ge=0, description="index of `label` in the model's class list")
    confidence: float = Field(ge=0, le=1, description="probability of `label`")
    probabilities: dict[str, float] = Field(description="probability of every class, in label order")
    model: str = Field(description="model store tag that answered")


class Predictions(BaseModel):
    """/classify_json's answer, in KServe v1's shape."""

    predictions: list[Prediction] = Field(description="one per image, in the order sent")


BASE64: JsonDict = {"contentEncoding": "base64"}  # JSON Schema's annotation for a string of base64


class ImagesRequest(BaseModel):
    """Image files as base64 strings in JSON."""

    model_config = ConfigDict(extra="forbid")
    images: list[str] = Field(
        min_length=1,
        description="each image file's bytes in base64 (RFC 4648), answered in this order",
        json_schema_extra={"items": {"type": "string", **BASE64}},
    )


class B64Instance(BaseModel):
    model_config = ConfigDict(extra="forbid")
    b64: str = Field(description="an image file's bytes in base64 (RFC 4648)", json_schema_extra=BASE64)


class InstancesRequest(BaseModel):
    """KServe v1's request for binary data: instances of `{"b64": ...}`."""

    model_config = ConfigDict(extra="forbid")
    instances: list[B64Instance] = Field(min_length=1, description="one image each, answered in this order")


class BatchingLimits(BaseModel):
    max_batch_size: int = Field(description="most images the runner puts through the model at once")
    max_latency_ms: int = Field(description="the runner batcher's latency budget")
    max_wait_s: float = Field(description="admission budget: the expected wait beyond which requests are shed")


class InputLimits(BaseModel):
    max_request_bytes: int
    max_file_bytes: int
    max_image_pixels: int = Field(description="width x height; larger images are refused before decoding")
    max_images_per_request: int = Field(description="most files one /classify_batch request may carry")
    allowed_formats: list[str] = Field(description="decided from the bytes, not the name or content type")
    multi_frame: str = Field(
        "first_frame", description="animated or multi-page images: only the first frame is classified"
    )
    url_inputs: bool = Field(False, description="URLs in place of files are refused; upload the bytes")
    timeout_s: float
    auth_required: bool

    @classmethod
    def from_settings(cls, settings: Any) -> InputLimits:
        return cls(
            max_request_bytes=settings.max_request_bytes,
            max_file_bytes=settings.max_file_bytes,
            max_image_pixels=settings.max_image_pixels,
            max_images_per_request=settings.max_images_per_request,
            allowed_formats=list(settings.allowed_formats),
            timeout_s=settings.timeout_s,
            auth_required=bool(settings.keys()),
        )


class MeasuredAccuracy(BaseModel):
    top1: float = Field(description="top-1 accuracy in percent")
    images: int = Field(description="how many labelled images it was measured on")
    on: str = Field(description="which images")

    @classmethod
    def from_metadata(cls, meta: dict[str, Any]) -> MeasuredAccuracy | None:
        if "measured_top1" not in meta:
            return None
        return cls(top1=meta["measured_top1"], images=meta["measured_images"], on=meta["measured_on"])


class ModelInfo(BaseModel):
    tag: str
    trained: bool | None = Field(
        description="true: a measured accuracy well above chance backs it; false: measured at chance; "
        "null: nothing was measured (see warning)"
    )
    warning: str | None = Field(None, description="what the service cannot vouch for about this model")
    weights: str = Field(description="where the weights came from: the checkpoint file or the embedded default")
    claimed_accuracy: float | None = Field(None, description="best_val_acc recorded in the checkpoint, not verified")
    measured_accuracy: MeasuredAccuracy | None = Field(None, description="top-1 measured at registration")
    classes: list[str]
    input_size: int
    preprocessing: dict[str, Any] = Field(description="resize policy, interpolation, mean and std")
    epoch: int | None = None
    parameters: int
    source_sha256: str
    device: str
    backend: str = Field(
        description="how the network runs: openvino (the stored IR) on the CPU, a torch backend on CUDA"
    )
    precision: str = Field(
        description="fp32 (exact), bf16, int8 or int8+recheck (int8, near ties re-checked) on the CPU; fp16 on CUDA"
    )
    precision_reason: str = Field(
        description="why this precision: `asked for` (PYRAMIDNET_PRECISION), or the rule's reason on this machine"
    )
    batching: BatchingLimits
    limits: InputLimits


class ErrorDetail(BaseModel):
    code: str = Field(description="stable UPPER_SNAKE machine-readable code")
    message: str = Field(description="a sentence for humans")
    retry_after: int | None = Field(None, description="seconds to wait before retrying (shed requests only)")


class ErrorResponse(BaseModel):
    error: ErrorDetail
    request_id: str = Field(description="the request's X-Request-ID, also in the response headers and logs")


def to_predictions(probabilities: np.ndarray, spec: ModelSpec, tag: str) -> list[Prediction]:
    """(N, C) probabilities -> N predictions, same order."""
    results = []
    for row in probabilities.tolist():
        best = max(range(len(row)), key=row.__getitem__)
        results.append(
            Prediction(
                label=spec.classes[best],
                class_id=best,
                confidence=row[best],
                probabilities=dict(zip(spec.classes, row, strict=True)),
                model=tag,
            )
        )
    return results
