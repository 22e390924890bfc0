"""The service's own Prometheus metrics, all named `pyramidnet_*` (docs/operations.md#metrics).

BentoML serves /metrics from prometheus_client in multiprocess mode: every worker process writes
its values to files in PROMETHEUS_MULTIPROC_DIR (set in each worker's environment before it starts)
and the scrape sums them. Counters and histograms add up across processes by nature; each gauge
says how its per-process values combine (`multiprocess_mode`), and the `live` modes drop a dead
worker's value. prometheus_client is imported here rather than through `bentoml.metrics`, which
1.4 deprecates in its favour.

No label takes its value from a request: routes are the service's own (anything else is `other`),
codes are the error contract's, labels the model's classes. The number of series is bounded.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np
from prometheus_client import Counter, Gauge, Histogram

from .errors import ALL_ERRORS, Internal, ModelNotFound, NotReady, Overloaded

OK = "OK"  # the `code` of an answer that is not an error
OTHER_ROUTE = "other"  # the `route` of a path the service does not serve
CODES = frozenset({OK, NotReady.code, ModelNotFound.code} | {e.code for e in ALL_ERRORS})

# --- Saturation (API workers) -----------------------------------------------------------------
REQUESTS = Counter("pyramidnet_requests", "answers by route and error code (OK: not an error)", ["route", "code"])
REQUEST_SECONDS = Histogram(
    "pyramidnet_request_duration_seconds",
    "time from the edge receiving a request to its answer, by route and error code",
    ["route", "code"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 30, 60),
)
SHED = Counter("pyramidnet_shed_requests", "requests answered 503 OVERLOADED, by route", ["route"])
# Each worker sets its own count; the scrape adds those of the workers alive.
IMAGES_IN_FLIGHT = Gauge(
    "pyramidnet_images_in_flight", "images admitted and not yet answered, on the server", multiprocess_mode="livesum"
)
# Every worker computes it from the whole server's ledger whenever the ledger changes: the latest
# write is the current value.
EXPECTED_WAIT = Gauge(
    "pyramidnet_expected_wait_seconds",
    "the wait a one-image request arriving now would be expected to have (admission's estimate)",
    multiprocess_mode="livemostrecent",
)

# --- The model (runner) ---------------------------------------------------------------------------
BATCH_IMAGES = Histogram(
    "pyramidnet_batch_images",
    "images in each forward pass of the model",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
MODEL_INFO = Gauge(
    "pyramidnet_model_info",
    "1 for the model served: its tag, precision, backend and device",
    ["tag", "precision", "backend", "device"],
    multiprocess_mode="livemax",
)
READY = Gauge(
    "pyramidnet_ready",
    "1 while the model is loaded, warm and its forward passes succeed (what /readyz reports), else 0",
    multiprocess_mode="livemax",
)
# Set once the runner has failed to load its model, which it does not retry (/livez turns 503): the
# pod is never ready, so no request reaches it and no answer says MODEL_UNAVAILABLE. Scraped anyway.
MODEL_LOAD_FAILED = Gauge(
    "pyramidnet_model_load_failed",
    "1 once the runner has failed to load the model (it does not retry: /livez answers 503), else 0",
    multiprocess_mode="livemax",
)
# When the runner started (Unix time): a new value per start, so its changes count restarts, ready
# or not, whether or not any request reached them.
STARTED = Gauge(
    "pyramidnet_start_time_seconds",
    "when the model's runner process started, in seconds since the epoch",
    multiprocess_mode="livemax",
)

# Where the runner serves int8 with re-checks (cascade.py): the images it ran again in the exact
# precision. Their share is this over pyramidnet_batch_images_sum.
RECHECKED = Counter(
    "pyramidnet_rechecked_images", "images int8 answered with a near tie, re-checked in the exact precision"
)

# --- What the model answers (API workers) --------------------------------------------------------
PREDICTIONS = Counter("pyramidnet_predictions", "images answered, by the top-1 label", ["label"])
TOP1_CONFIDENCE = Histogram(
    "pyramidnet_top1_confidence_ratio",
    "the probability of the top-1 label of each image answered",
    buckets=(0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.99),
)


def route_label(path: str, routes: Collection[str]) -> str:
    return path if path in routes else OTHER_ROUTE


def code_label(code: str | None) -> str:
    """The error contract's code; OK for an answer that is not an error, INTERNAL for a code outside the contract."""
    if code is None:
        return OK
    return code if code in CODES else Internal.code


def observe_answer(route: str, code: str, seconds: float) -> None:
    REQUESTS.labels(route, code).inc()
    REQUEST_SECONDS.labels(route, code).observe(seconds)
    if code == Overloaded.code:
        SHED.labels(route).inc()


def observe_predictions(probabilities: np.ndarray, classes: Sequence[str]) -> None:
    """Count the top-1 labels and record the top-1 confidences of a batch of answers (N, classes)."""
    top = probabilities.argmax(axis=1)
    for index, count in zip(*np.unique(top, return_counts=True), strict=True):
        PREDICTIONS.labels(classes[index]).inc(int(count))
    for confidence in probabilities[np.arange(len(top)), top]:
        TOP1_CONFIDENCE.observe(float(confidence))


def expect_labels(classes: Sequence[str]) -> None:
    """Every label's series from the start, so a label never predicted reads 0 rather than nothing."""
    for label in classes:
        PREDICTIONS.labels(label)


def publish_model(tag: str, runtime: dict[str, str]) -> None:
    MODEL_INFO.labels(tag, runtime["precision"], runtime["backend"], runtime["device"]).set(1)
