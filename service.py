"""BentoML wiring: an API service (decode, preprocess, encode) in front of a batching model runner.

All tensor and image work lives in src/model_store; this file only declares services and routes.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path

import bentoml
import numpy as np
from starlette.responses import JSONResponse

from model_store import (
    ClientError,
    ModelInfo,
    Prediction,
    Settings,
    TooManyImages,
    decode_image,
    load_classifier,
    preprocess_batch,
    read_spec,
    to_predictions,
)
from model_store.errors import error_body
from model_store.middleware import ErrorContract
from model_store.schemas import BatchingLimits

settings = Settings()
log = logging.getLogger("pyramidnet")
for name in ("pyramidnet", "model_store"):  # BentoML shows only its own INFO lines by default
    logging.getLogger(name).setLevel(logging.INFO)
UNTRAINED_WARNING = "this model has untrained random-init weights: its predictions are meaningless"


@bentoml.service(
    name="pyramidnet_runner",
    resources={"gpu": 1},
    workers=1,
    traffic={"timeout": settings.timeout_s},
    # The API's client renews its connection every 100 requests and closes the old one under
    # in-flight requests (BentoML issue 5540): sporadic 500s under load. Never renew.
    runner_connection={"max_requests": 2**62, "max_age": 1e12},
)
class PyramidNetRunner:
    """Owns the model: one worker, CUDA when visible, adaptive batching over float32 (N, 3, 32, 32)."""

    model_ref = bentoml.models.BentoModel(settings.model)

    def __init__(self) -> None:
        self.classifier = load_classifier(self.model_ref, settings.device)
        if not self.classifier.trained:
            log.warning("%s: %s", self.classifier.tag, UNTRAINED_WARNING)
        self._warm = threading.Event()
        threading.Thread(target=self._warm_up, name="warm-up", daemon=True).start()

    def _warm_up(self) -> None:
        self.classifier.warm_up([1, settings.max_batch_size])
        self._warm.set()

    def __is_ready__(self) -> bool:
        return self._warm.is_set()

    @bentoml.api(
        batchable=True,
        batch_dim=0,
        max_batch_size=settings.max_batch_size,
        max_latency_ms=settings.max_latency_ms,
    )
    def predict(self, batch: np.ndarray) -> np.ndarray:
        """float32 (N, 3, 32, 32) normalised images -> float32 (N, 10) probabilities."""
        return self.classifier.predict_proba(batch)

    @bentoml.api
    def device(self) -> str:
        return str(self.classifier.device)


@bentoml.service(
    name="pyramidnet_classifier",
    workers=settings.api_workers,
    traffic={"timeout": settings.timeout_s},
)
class PyramidNetClassifier:
    """Typed image endpoints: decode and preprocess here, only the float batch goes to the runner."""

    model_ref = bentoml.models.BentoModel(settings.model)
    runner = bentoml.depends(PyramidNetRunner)

    def __init__(self) -> None:
        self.model = self.model_ref
        self.spec = read_spec(self.model)
        self.tag = str(self.model.tag)

    @bentoml.api(route="/classify")
    async def classify(self, image: Path) -> Prediction:
        """Classify one image (multipart field `image`)."""
        try:
            return (await self._classify([image]))[0]
        except ClientError as e:
            return _error(e)

    @bentoml.api(route="/classify_batch")
    async def classify_batch(self, images: list[Path]) -> list[Prediction]:
        """Classify 1..N images (multipart field `images`, repeated); results in the same order."""
        try:
            if len(images) > settings.max_images_per_request:
                raise TooManyImages(
                    f"{len(images)} images in one request; the limit is {settings.max_images_per_request}"
                )
            return await self._classify(images)
        except ClientError as e:
            return _error(e)

    @bentoml.api(route="/model_info")
    async def model_info(self) -> ModelInfo:
        """The served model: tag, whether it is trained, classes, preprocessing, limits, device."""
        meta = self.model.info.metadata
        trained = bool(meta.get("trained", False))
        return ModelInfo(
            tag=self.tag,
            trained=trained,
            warning=None if trained else UNTRAINED_WARNING,
            classes=list(self.spec.classes),
            input_size=self.spec.input_size,
            preprocessing=self.spec.model_dump(include={"resize", "interpolation", "mean", "std"}),
            accuracy=meta.get("best_val_acc"),
            epoch=meta.get("epoch"),
            parameters=meta["parameters"],
            source_sha256=meta["source_sha256"],
            device=await self.runner.to_async.device(),
            batching=BatchingLimits(
                max_batch_size=settings.max_batch_size,
                max_latency_ms=settings.max_latency_ms,
                max_images_per_request=settings.max_images_per_request,
            ),
        )

    async def _classify(self, paths: list[Path]) -> list[Prediction]:
        batch = await asyncio.to_thread(self._prepare, paths)
        probabilities = await self.runner.to_async.predict(batch)
        return to_predictions(probabilities, self.spec, self.tag)

    def _prepare(self, paths: list[Path]) -> np.ndarray:
        """Files -> float32 (N, 3, 32, 32); a bad file names its position in the request."""
        images = []
        for i, path in enumerate(paths):
            try:
                images.append(decode_image(path, max_pixels=settings.max_image_pixels))
            except ClientError as e:
                raise type(e)(f"images[{i}]: {e}" if len(paths) > 1 else str(e)) from None
        return preprocess_batch(images, self.spec)


def _error(e: ClientError) -> JSONResponse:
    return JSONResponse(error_body(e.code, str(e)), status_code=e.status)


PyramidNetClassifier.add_asgi_middleware(
    ErrorContract,
    file_fields={api.route: set(api.input_spec.multipart_fields) for api in PyramidNetClassifier.apis.values()},
    max_request_bytes=settings.max_request_bytes,
)
