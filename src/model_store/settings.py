"""Deployment settings, read from PYRAMIDNET_* environment variables."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from .options import Backend, Precision
from .spec import DEFAULT_MODEL_NAME

CommaList = Annotated[tuple[str, ...], NoDecode]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PYRAMIDNET_", frozen=True)

    # What is served, and where.
    model: str = Field(f"{DEFAULT_MODEL_NAME}:latest", description="model store tag to serve")
    device: str = Field("auto", description="auto (CUDA if visible, else CPU), cpu, cuda or cuda:N")
    backend: Literal["auto"] | Backend = Field(
        "auto", description="how the network runs; auto: OpenVINO on the CPU, fused torch on CUDA (inference.choose)"
    )
    precision: Literal["auto"] | Precision = Field(
        "auto",
        description="auto: on the CPU the fastest precision within 0.1 pp of fp32's top-1 (int8 where the model's "
        "int8 IR records a measurement within that bound, else bf16 where the CPU computes bf16 natively, else "
        "fp32; that exact precision becomes int8+recheck where the int8 IR records a re-check margin within the "
        "bound and a speed probe at start finds it 15 % faster on this CPU); fp16 autocast on CUDA. bf16, int8 "
        "and int8+recheck run through OpenVINO on the CPU",
    )
    api_workers: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        "auto",
        description="API worker processes; auto: one per 3 CPUs the server may use (cgroup limits count), at least one",
    )

    # Batching (docs/performance/serving.md#batching-defaults): past 16 images a forward pass gains little
    # on the CPU, and larger batches take longer to gather and travel. The batcher's own budget is
    # only a backstop: admission control sheds first. On a GPU raise max_batch_size
    # (deploy/k8s/overlays/gpu).
    max_batch_size: Annotated[int, Field(ge=1)] = 16
    max_latency_ms: Annotated[int, Field(ge=1)] = 10000
    max_wait_s: Annotated[float, Field(gt=0)] = Field(
        2.0,
        description="admit a request while the wait it can expect (images in flight on every API worker, "
        "times the seconds per image measured) fits this budget; beyond it, 503 OVERLOADED",
    )
    timeout_s: Annotated[float, Field(gt=0)] = Field(60, description="answer 504 TIMEOUT after this long")

    # Input limits.
    max_request_bytes: Annotated[int, Field(ge=1)] = 32 * 1024 * 1024
    max_file_bytes: Annotated[int, Field(ge=1)] = 8 * 1024 * 1024
    max_image_pixels: Annotated[int, Field(ge=1)] = 25_000_000
    max_images_per_request: Annotated[int, Field(ge=1)] = 64
    allowed_formats: CommaList = ("BMP", "GIF", "JPEG", "PNG", "TIFF", "WEBP")

    # Access.
    api_keys: Annotated[tuple[SecretStr, ...], NoDecode] = Field((), description="comma-separated; empty: no auth")
    api_keys_file: Path | None = Field(None, description="one key per line; combined with api_keys")
    cors_origins: CommaList = Field((), description="origins allowed by CORS; empty: CORS off")

    # Traces (docs/operations.md#traces): OpenTelemetry through BentoML's tracing settings.
    otlp_endpoint: str = Field(
        "", description="OTLP/HTTP endpoint for traces, e.g. http://otel-collector:4318/v1/traces; empty: none"
    )
    trace_sample_rate: Annotated[float, Field(ge=0, le=1)] = Field(
        0.1, description="share of new traces recorded; a request's W3C traceparent decides for its own trace"
    )

    @field_validator("allowed_formats", "cors_origins", "api_keys", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        return tuple(part.strip() for part in value.split(",") if part.strip()) if isinstance(value, str) else value

    @field_validator("allowed_formats")
    @classmethod
    def _upper(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(sorted({v.upper() for v in value}))

    def api_worker_count(self, cpus: float) -> int:
        """How many API workers to run on `cpus` cores. For `auto`: one per 3 cores, at least one. A
        request costs an API worker about a third of what it costs the runner, and more workers split
        the forward passes into smaller batches (docs/performance/serving.md#where-the-cpu-goes). Untested
        above 2 cores."""
        if self.api_workers != "auto":
            return self.api_workers
        return max(1, math.ceil(cpus / 3))

    def tracing(self) -> dict[str, object]:
        """BentoML's `tracing` settings of a service: the OTLP/HTTP exporter and the sample rate (parent
        based: a sampled traceparent is recorded whatever the rate); none without an endpoint."""
        if not self.otlp_endpoint:
            return {}
        otlp = {"protocol": "http", "endpoint": self.otlp_endpoint}
        return {"exporter_type": "otlp", "sample_rate": self.trace_sample_rate, "otlp": otlp}

    def keys(self) -> list[bytes]:
        """Every accepted API key; none means authentication is off."""
        keys = [k.get_secret_value() for k in self.api_keys]
        if self.api_keys_file is not None:
            keys += [line.strip() for line in self.api_keys_file.read_text().splitlines() if line.strip()]
        return [k.encode() for k in keys]
