"""A server with API keys, CORS and tight admission limits: who gets in, and overload shed early with Retry-After."""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import bentoml
import httpx
import numpy as np
import pytest

from model_store import CIFAR10_CLASSES

from ..scripts import locust
from ..servers import Server, start_server, stop_server

pytestmark = pytest.mark.alone  # shedding depends on the throughput the cores give: nothing runs beside it (make test)


def one(name: str, data: bytes, ctype: str = "image/png") -> dict:
    return {"files": {"image": (name, data, ctype)}}


# --- A server with API keys, CORS and a small admission queue -----------------------------

KEYS = ("key-one-7d1e", "key-two-c04b")
FILE_KEY = "key-from-file-99aa"
ORIGIN = "https://app.example.com"
MAX_WAIT_S = 0.05  # admission budget: a few images' worth, so a burst of 48 clients overloads it
BUDGET_MS = 3000  # the batcher's latency budget, far above what an admitted request waits


@pytest.fixture(scope="module")
def guarded(default_model, tmp_path_factory) -> Server:
    home = tmp_path_factory.mktemp("guarded")
    keys_file = home / "keys.txt"
    keys_file.write_text(f"\n{FILE_KEY}\n")
    srv = start_server(
        str(default_model.tag),
        home / "serve.log",
        api_keys=",".join(KEYS),
        api_keys_file=str(keys_file),
        cors_origins=ORIGIN,
        max_wait_s=str(MAX_WAIT_S),
        api_workers="2",
        max_latency_ms=str(BUDGET_MS),
    )
    yield srv
    stop_server(srv)


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"X-API-Key": KEYS[0][:-1]}, {"Authorization": KEYS[0]}],
    ids=["none", "wrong-bearer", "prefix-of-a-key", "no-bearer-scheme"],
)
def test_requests_without_a_valid_key_are_refused(guarded, headers, sample_jpegs):
    response = httpx.post(guarded.url + "/classify", headers=headers, **one("a.jpg", sample_jpegs[0].read_bytes()))
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "UNAUTHORIZED"
    assert response.json()["request_id"]


@pytest.mark.parametrize(
    "headers",
    [{"Authorization": f"Bearer {KEYS[0]}"}, {"X-API-Key": KEYS[1]}, {"Authorization": f"bearer {FILE_KEY}"}],
    ids=["bearer", "x-api-key", "key-from-file"],
)
def test_valid_keys_are_accepted(guarded, headers, sample_jpegs):
    response = httpx.post(guarded.url + "/classify", headers=headers, **one("a.jpg", sample_jpegs[0].read_bytes()))
    assert response.status_code == 200, response.text


def test_probes_and_metrics_need_no_key(guarded):
    for path in ("/readyz", "/livez", "/healthz", "/metrics"):
        assert httpx.get(guarded.url + path).status_code == 200, path
    assert httpx.post(guarded.url + "/model_info").status_code == 401


def test_generated_client_with_a_token(guarded, sample_jpegs):
    with bentoml.SyncHTTPClient(guarded.url, token=KEYS[1]) as client:
        assert client.classify(image=sample_jpegs[0])["label"] in CIFAR10_CLASSES
        assert client.model_info()["limits"]["auth_required"] is True


def test_cors_preflight_for_the_configured_origin(guarded):
    preflight = httpx.options(
        guarded.url + "/classify",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    other = httpx.options(
        guarded.url + "/classify", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    )
    assert other.headers.get("access-control-allow-origin") != "https://evil.example"


def test_overload_is_shed_early_with_retry_after_and_never_500(guarded, sample_jpegs):
    images = [p.read_bytes() for p in sample_jpegs[:40]]
    auth = {"X-API-Key": KEYS[0]}
    local = threading.local()

    def call(i: int) -> tuple[int, float, httpx.Response]:
        if not hasattr(local, "client"):
            local.client = httpx.Client(timeout=120, headers=auth)
        start = time.perf_counter()
        response = local.client.post(guarded.url + "/classify", **one("a.jpg", images[i % len(images)], "image/jpeg"))
        return response.status_code, time.perf_counter() - start, response

    with ThreadPoolExecutor(48) as pool:  # a bounded burst: 240 requests, far over the budget
        results = list(pool.map(call, range(240)))

    statuses = Counter(status for status, _, _ in results)
    assert set(statuses) <= {200, 503}, statuses
    assert statuses[503] > 0, statuses
    assert statuses[200] > 0, statuses
    for status, _, response in results:
        if status == 503:
            assert response.json()["error"]["code"] == "OVERLOADED"
            assert int(response.headers["retry-after"]) >= 1
            assert response.headers["connection"] == "close"  # uvicorn closed it: the retry may reach another pod
    accepted = np.array([seconds for status, seconds, _ in results if status == 200])
    # Admitted only while the expected wait is a few images' worth: well inside the batcher's budget.
    p99 = np.percentile(accepted, 99)
    assert p99 < BUDGET_MS / 1000, f"accepted p99 {p99:.3f} s, {statuses}"
    assert guarded.is_ready()


def test_the_load_test_retries_shed_requests_and_does_not_count_them_as_failures(guarded, cifar10_dir, tmp_path):
    """README's Locust run against a server over its budget: shed attempts have their own rows, are
    retried after Retry-After, and nothing is a failure."""
    stats = locust(
        guarded.url,
        tmp_path / "locust",
        *("-u", "24", "-r", "24", "-t", "10s", "--cifar10", str(cifar10_dir / "test-jpeg.tar.gz")),
        *("--api-key", KEYS[0], "--batch-size", "8"),
    )
    assert int(stats["SHED", "/classify_batch"]["Request Count"]) > 0, stats
    for endpoint in ("/classify", "/classify_batch"):
        assert int(stats["POST", endpoint]["Request Count"]) > 0, stats
    assert int(stats["", "Aggregated"]["Failure Count"]) == 0, stats
