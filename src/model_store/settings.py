"""Deployment settings, read from PYRAMIDNET_* environment variables."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from .registry import DEFAULT_MODEL_NAME


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PYRAMIDNET_", frozen=True)

    model: str = Field(f"{DEFAULT_MODEL_NAME}:latest", description="model store tag to serve")
    device: str = Field("auto", description="auto (CUDA if visible, else CPU), cpu, cuda or cuda:N")
    # CPU, 2 cores: offline throughput plateaus from batch 32 (80 img/s; 64 is no faster and twice
    # as slow per batch); a 1000 ms budget served concurrency 32 with no shedding, p99 0.77 s, while
    # 300 ms shed a third of the requests. See README, "Batching".
    max_batch_size: Annotated[int, Field(ge=1)] = 32
    max_latency_ms: Annotated[int, Field(ge=1)] = 1000
    max_images_per_request: Annotated[int, Field(ge=1)] = 64
    max_request_bytes: Annotated[int, Field(ge=1)] = 32 * 1024 * 1024
    max_image_pixels: Annotated[int, Field(ge=1)] = 25_000_000
    api_workers: Annotated[int, Field(ge=1)] | Literal["cpu_count"] = Field(
        "cpu_count", description="API worker processes; cpu_count lets BentoML use one per core"
    )
    timeout_s: Annotated[int, Field(ge=1)] = 60
