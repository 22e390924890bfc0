"""BentoML wiring: an API service (decode, preprocess, encode) in front of a batching model runner.

All tensor and image work lives in src/model_store; this file only declares services and routes.
"""

from __future__ import annotations

import asyncio
import logging
import threading

import aiohttp
import bentoml
import httpx
import numpy as np
from bentoml.exceptions import BentoMLException

from model_store import (
    ApiError,
    Classifier,
    ModelInfo,
    Prediction,
    Settings,
    decode_image,
    get_model,
    load_classifier,
    preprocess_batch,
    read_spec,
    telemetry,
    to_predictions,
)
from model_store.bentoml_internals import cpu_budget
from model_store.coalesce import Coalescer
from model_store.edge import (
    Admission,
    Bodies,
    ClassifyBatchInput,
    ClassifyInput,
    ClassifyJsonInput,
    Document,
    Hall,
    Ledger,
    Upload,
    answers_errors,
    service_routes,
)
from model_store.edge.oip import oip_app
from model_store.errors import Internal, ModelUnavailable, Overloaded
from model_store.evaluation import verdict
from model_store.logs import configure_logging
from model_store.oip import InferRequest
from model_store.schemas import BatchingLimits, InputLimits, MeasuredAccuracy, Predictions
from model_store.shutdown import CountCalls, DrainBeforeExit

settings = Settings()
configure_logging()
log = logging.getLogger("pyramidnet")
API_WORKERS = settings.api_worker_count(cpu_budget())
# BentoML's own traffic timeout answers outside the error contract: the edge's deadline answers first.
FRAMEWORK_TIMEOUT_S = settings.timeout_s + 30
# The runner's SIGTERM waits for the calls the API workers still send it (see shutdown.py).
drain = DrainBeforeExit(max_s=settings.timeout_s)
# The served model, resolved now (`:latest` to its version): the Open Inference Protocol routes by
# name and version, and its inference routes take images of the spec's size.
SERVED_MODEL = get_model(settings.model)
SERVED, SPEC = SERVED_MODEL.tag, read_spec(SERVED_MODEL)
# Uploads of at most this many bytes in all are decoded in the event loop (PyramidNetClassifier._prepared).
INLINE_DECODE_BYTES = 4096
# Every route, declared once: the edge reads each one's entry (src/model_store/edge/table.py).
ROUTES = service_routes(settings, SERVED.name, SERVED.version, SPEC.input_size)


@bentoml.service(
    name="pyramidnet_runner",
    resources={"gpu": 1},
    workers=1,
    traffic={"timeout": FRAMEWORK_TIMEOUT_S},
    logging={"access": {"enabled": False}},  # internal calls; the API logs each request
    # The API's probes call the runner's: traced, each would be a trace of its own.
    tracing={**settings.tracing(), "excluded_urls": ["/readyz", "/livez", "/healthz", "/metrics"]},
    # The API's client renews its connection every 100 requests and closes the old one under
    # in-flight requests (BentoML issue 5540): sporadic 500s under load. Never renew.
    runner_connection={"max_requests": 2**62, "max_age": 1e12},
)
class PyramidNetRunner:
    """Owns the model: one worker, CUDA when visible, adaptive batching over float32 (N, 3, 32, 32)."""

    model_ref = bentoml.models.BentoModel(settings.model)

    def __init__(self) -> None:
        # __init__ runs inside the worker's event loop: loading there would leave the port bound
        # but deaf (probes hang, a stop waits for the load to finish). Load in a thread instead.
        self.classifier: Classifier | None = None
        self._settled = threading.Event()  # loaded and warm, or failed
        self._load_error = ""  # why the load failed; it is not tried again
        telemetry.STARTED.set_to_current_time()
        drain.install()
        threading.Thread(target=self._load, name="load-model", daemon=True).start()

    def _load(self) -> None:
        try:
            classifier = load_classifier(self.model_ref, settings.device, settings.backend, settings.precision)
            meta = classifier.metadata
            log.info(
                "serving %s (weights from %s, sha256 %s)", classifier.tag, meta.get("source"), meta.get("source_sha256")
            )
            if warning := verdict(meta, classifier.spec.num_classes)[1]:
                log.warning("%s: %s", classifier.tag, warning)
            # Every power of two up to the largest batch: the shapes the batcher forms most on a GPU.
            classifier.warm_up(
                sorted({1 << i for i in range(settings.max_batch_size.bit_length())} | {settings.max_batch_size})
            )
        except Exception as e:
            log.exception("could not load %s", self.model_ref.tag)
            self._load_error = f"{type(e).__name__}: {e}"
            telemetry.MODEL_LOAD_FAILED.set(1)
        else:
            self.classifier = classifier
            telemetry.publish_model(str(classifier.tag), self._runtime(classifier))
            telemetry.READY.set(1)
        self._settled.set()

    def _model(self) -> Classifier:
        """The loaded model, waiting for the load if a call comes first; fails at once if the load did."""
        if not self._settled.wait(settings.timeout_s):
            raise RuntimeError("the model is still loading")
        if self.classifier is None:
            raise RuntimeError(f"the model could not be loaded: {self._load_error}")
        return self.classifier

    def __is_alive__(self) -> bool:
        return not self._load_error

    def __is_ready__(self) -> bool:
        """Loaded and warm, and the last forward passes did not all fail (a failing device re-tests on each probe)."""
        if self.classifier is None:
            return False
        if not self.classifier.healthy:
            try:
                self.classifier.warm_up([1])
            except Exception:
                log.exception("runner still unhealthy after %d failed batches", self.classifier.consecutive_failures)
        telemetry.READY.set(self.classifier.healthy)
        return self.classifier.healthy

    @bentoml.api(
        batchable=True,
        batch_dim=0,
        max_batch_size=settings.max_batch_size,
        max_latency_ms=settings.max_latency_ms,
    )
    def predict(self, batch: np.ndarray) -> np.ndarray:
        """float32 (N, 3, 32, 32) normalised images -> float32 (N, 10) probabilities."""
        telemetry.BATCH_IMAGES.observe(len(batch))
        return self._model().predict_proba(batch)

    @bentoml.api
    def load_error(self) -> str:
        """Why the model could not be loaded: empty while it loads and once it has. Never waits."""
        return self._load_error

    @bentoml.api
    def runtime(self) -> dict[str, str]:
        """Where and how the model runs: device, backend, precision and why that precision."""
        return self._runtime(self._model())

    @staticmethod
    def _runtime(model: Classifier) -> dict[str, str]:
        return {
            "device": model.device,
            "backend": model.backend,
            "precision": model.precision,
            "precision_reason": model.precision_reason,
        }


# The Open Inference Protocol (KServe v2) under /v2, beside the routes below (src/model_store/oip.py).
@bentoml.asgi_app(oip_app(SERVED.name, SERVED.version, bentoml.get_current_service), path="/")
@bentoml.service(
    name="pyramidnet_classifier",
    workers=API_WORKERS,
    traffic={"timeout": FRAMEWORK_TIMEOUT_S},
    # The edge logs, counts and times each request once (src/model_store/edge/observer.py), and
    # answers /metrics itself: BentoML's own access log and request metrics would do it again.
    logging={"access": {"enabled": False}},
    metrics={"enabled": False},
    # The edge opens each request's span itself, from the same context as its log line and metrics:
    # BentoML's OpenTelemetry middleware would open another (and one per message sent) on every URL.
    tracing={**settings.tracing(), "excluded_urls": ["/"]},
    http={
        "cors": {
            "enabled": bool(settings.cors_origins),
            "access_control_allow_origins": list(settings.cors_origins),
            "access_control_allow_methods": ["GET", "POST", "OPTIONS"],
            "access_control_allow_headers": ["Authorization", "X-API-Key", "X-Request-ID", "Content-Type"],
            "access_control_expose_headers": ["X-Request-ID", "Retry-After"],
        }
    },
)
class PyramidNetClassifier:
    """Typed image endpoints: decode and preprocess here, only the float batch goes to the runner."""

    model_ref = bentoml.models.BentoModel(settings.model)
    runner = bentoml.depends(PyramidNetRunner)

    def __init__(self) -> None:
        self.model = self.model_ref
        self.spec = SPEC
        self.tag = str(self.model.tag)
        self.coalesce = Coalescer(self._predict, max_images=settings.max_batch_size)
        telemetry.expect_labels(self.spec.classes)

    @bentoml.api(route="/classify", input_spec=ClassifyInput)
    @answers_errors
    async def classify(self, image: Upload) -> Prediction:
        """Classify one image (multipart field `image`)."""
        return (await self._classify([image]))[0]

    @bentoml.api(route="/classify_batch", input_spec=ClassifyBatchInput)
    @answers_errors
    async def classify_batch(self, images: list[Upload]) -> list[Prediction]:
        """Classify 1..N images (multipart field `images`, repeated); results in the same order."""
        return await self._classify(images)

    @bentoml.api(route="/classify_json", input_spec=ClassifyJsonInput)
    @answers_errors
    async def classify_json(self, images: list[Upload]) -> Predictions:
        """Classify 1..N images sent as base64 in JSON (`{"images": [...]}`, or KServe v1's
        `{"instances": [{"b64": ...}]}`); the answers of /classify_batch, as `{"predictions": [...]}`."""
        return Predictions(predictions=await self._classify(images))

    async def __is_alive__(self) -> bool:
        """False once the runner has failed to load the model, which it does not retry: /livez
        answers 503 and the orchestrator restarts the server."""
        return not await self._load_error()

    async def is_live(self) -> bool:
        """/livez's answer, for /v2/health/live."""
        return await self.__is_alive__()

    async def is_ready(self) -> bool:
        """/readyz's answer (the runner loaded the model and answers), for the /v2 readiness routes."""
        try:
            return await self.runner.is_ready(5)
        except httpx.HTTPError:  # the runner is not there (yet): not ready, not a server error
            return False

    async def probabilities(self, request: InferRequest) -> np.ndarray:
        """An Open Inference Protocol request's probabilities: its files as /classify_batch's, or its
        preprocessed pixels straight to the runner."""
        if request.pixels is not None:
            return await self._probabilities(request.pixels)
        uploads = [Upload(None, None, data) for data in request.images or []]
        return await self._probabilities(await self._prepared(uploads))

    @bentoml.api(route="/model_info")
    @answers_errors
    async def model_info(self) -> ModelInfo:
        """The served model: tag, what backs it, classes, preprocessing, limits, and how it runs."""
        try:
            runtime = await self.runner.to_async.runtime()
        except (BentoMLException, aiohttp.ClientConnectionError):
            raise await self._runner_failed("runtime") from None
        meta = self.model.info.metadata
        trained, warning = verdict(meta, self.spec.num_classes)
        return ModelInfo(
            tag=self.tag,
            trained=trained,
            warning=warning,
            weights=meta["source"],
            claimed_accuracy=meta.get("best_val_acc"),
            measured_accuracy=MeasuredAccuracy.from_metadata(meta),
            classes=list(self.spec.classes),
            input_size=self.spec.input_size,
            preprocessing=self.spec.model_dump(include={"resize", "interpolation", "mean", "std"}),
            epoch=meta.get("epoch"),
            parameters=meta["parameters"],
            source_sha256=meta["source_sha256"],
            **runtime,
            batching=BatchingLimits(
                max_batch_size=settings.max_batch_size,
                max_latency_ms=settings.max_latency_ms,
                max_wait_s=settings.max_wait_s,
            ),
            limits=InputLimits.from_settings(settings),
        )

    async def _classify(self, uploads: list[Upload]) -> list[Prediction]:
        batch = await self._prepared(uploads)
        return to_predictions(await self._probabilities(batch), self.spec, self.tag)

    async def _probabilities(self, batch: np.ndarray) -> np.ndarray:
        try:
            probabilities = await self.coalesce(batch)
        except BentoMLException as e:
            if e.error_code == 503:  # the runner's batcher shed it: it would miss the latency budget
                raise Overloaded("the model is at capacity; retry shortly") from None
            raise await self._runner_failed(f"a batch of {len(batch)}") from None
        except aiohttp.ClientConnectionError:
            raise await self._runner_failed(f"a batch of {len(batch)}") from None
        telemetry.observe_predictions(probabilities, self.spec.classes)
        return probabilities

    async def _runner_failed(self, call: str) -> ApiError:
        """The answer to a runner call that failed (logged with its cause): MODEL_UNAVAILABLE if
        the model never loaded, else INTERNAL."""
        if reason := await self._load_error():
            log.error("runner call for %s refused: the model could not be loaded (%s)", call, reason)
            return ModelUnavailable()
        log.exception("runner failed on %s", call)
        return Internal("inference failed")

    async def _load_error(self) -> str:
        """Why the runner could not load the model; empty if it has or still may (a runner that
        does not answer within 2 s is busy or starting, not evidence of a failed load)."""
        try:
            return await asyncio.wait_for(self.runner.to_async.load_error(), timeout=2)
        except (TimeoutError, BentoMLException, aiohttp.ClientError):
            return ""

    async def _predict(self, batch: np.ndarray) -> np.ndarray:
        try:
            return await self.runner.to_async.predict(batch)
        except aiohttp.ClientConnectionError:
            # The runner closed a pooled connection as this call went out on it (seen under a
            # 503 storm at 1,000 images queued). Inference is pure: send it once more.
            log.warning("runner connection lost; retrying a batch of %d once", len(batch))
            return await self.runner.to_async.predict(batch)

    async def _prepared(self, uploads: list[Upload]) -> np.ndarray:
        """The batch of `uploads`: decoded here when their bytes are few (a thread's hand-off would cost
        more than the decoding; at most about 1 Mpx, 8 ms, for the most compressible PNG), else in a thread."""
        if sum(len(upload.data) for upload in uploads) <= INLINE_DECODE_BYTES:
            return self._prepare(uploads)
        return await asyncio.to_thread(self._prepare, uploads)

    def _prepare(self, uploads: list[Upload]) -> np.ndarray:
        """Files -> float32 (N, 3, 32, 32); a bad file names its position in the request."""
        images = []
        for i, upload in enumerate(uploads):
            try:
                images.append(
                    decode_image(upload.data, max_pixels=settings.max_image_pixels, formats=settings.allowed_formats)
                )
            except ApiError as e:
                raise type(e)(f"images[{i}]: {e}" if len(uploads) > 1 else str(e)) from None
        return preprocess_batch(images, self.spec)


PyramidNetRunner.add_asgi_middleware(CountCalls, drain=drain)

ROUTES.check(api.route for api in PyramidNetClassifier.apis.values())
# The front hall: every request passes it once (src/model_store/edge/hall.py).
PyramidNetClassifier.add_asgi_middleware(
    Hall,
    routes=ROUTES,
    bodies=Bodies(max_request_bytes=settings.max_request_bytes, max_file_bytes=settings.max_file_bytes),
    admission=lambda: Admission(
        Ledger.for_server(API_WORKERS, (bentoml.server_context.worker_index or 1) - 1),
        budget_s=settings.max_wait_s,
        batch_images=settings.max_batch_size,
    ),
    document=Document(ROUTES, (SERVED.name, SERVED.version)),
    timeout_s=settings.timeout_s,
    keys=settings.keys(),
)
