"""Typed results of the service (pydantic): what clients receive, documented in the OpenAPI schema."""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from .spec import ModelSpec


class Prediction(BaseModel):
    label: str = Field(description="most probable class name")
    class_id: int = Field(ge=0, description="index of `label` in the model's class list")
    confidence: float = Field(ge=0, le=1, description="probability of `label`")
    probabilities: dict[str, float] = Field(description="probability of every class, in label order")
    model: str = Field(description="model store tag that answered")


class BatchingLimits(BaseModel):
    max_batch_size: int = Field(description="most images the runner puts through the model at once")
    max_latency_ms: int = Field(description="longest a request may wait in the runner's queue")
    max_images_per_request: int = Field(description="most files one /classify_batch request may carry")


class ModelInfo(BaseModel):
    tag: str
    trained: bool = Field(description="false for the embedded random-init default: its predictions are meaningless")
    warning: str | None = None
    classes: list[str]
    input_size: int
    preprocessing: dict[str, Any] = Field(description="resize policy, interpolation, mean and std")
    accuracy: float | None = Field(None, description="best validation accuracy recorded in the checkpoint, if any")
    epoch: int | None = None
    parameters: int
    source_sha256: str
    device: str
    batching: BatchingLimits


class ErrorDetail(BaseModel):
    code: str = Field(description="stable UPPER_SNAKE machine-readable code")
    message: str = Field(description="a sentence for humans")


class ErrorResponse(BaseModel):
    error: ErrorDetail


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
