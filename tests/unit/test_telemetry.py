"""The service's metrics, in-process: what each answer, admission change and prediction records, and that
no label ever takes a value from a request."""

from __future__ import annotations

import asyncio
import random
import string

import numpy as np
import pytest
from prometheus_client import REGISTRY
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route as Path_

from model_store import telemetry
from model_store.edge import Kind, Ledger, Route, answers_errors
from model_store.edge.observer import expect
from model_store.errors import ApiError

from .test_edge import ADDED_ROUTE, ONE, TABLE, THREE, _get, _post, edge, run, tiny_app

UNUSED_ROUTE = "/never-requested"


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_answers_are_counted_and_timed_by_route_and_error_code():
    before = {
        "ok": value("pyramidnet_requests_total", route="/classify", code="OK"),
        "bad": value("pyramidnet_requests_total", route="/fail", code="INVALID_IMAGE"),
        "missing": value("pyramidnet_requests_total", route="other", code="NOT_FOUND"),
        "timed": value("pyramidnet_request_duration_seconds_count", route="/slow", code="OK"),
        "slow_sum": value("pyramidnet_request_duration_seconds_sum", route="/slow", code="OK"),
    }
    run(_post(edge(), "/classify", content=b"png", headers={"content-type": "image/png"}))
    run(_post(edge(), "/fail", **ONE))
    run(_post(edge(), "/no/such/route"))
    run(_post(edge(), "/slow?s=0.2", **ONE))
    run(_get(edge(), "/readyz"))  # probes and scrapes are not answers to count
    run(_get(edge(), "/metrics"))
    assert value("pyramidnet_requests_total", route="/classify", code="OK") == before["ok"] + 1
    assert value("pyramidnet_requests_total", route="/fail", code="INVALID_IMAGE") == before["bad"] + 1
    assert value("pyramidnet_requests_total", route="other", code="NOT_FOUND") == before["missing"] + 1
    assert value("pyramidnet_request_duration_seconds_count", route="/slow", code="OK") == before["timed"] + 1
    assert value("pyramidnet_request_duration_seconds_sum", route="/slow", code="OK") - before["slow_sum"] >= 0.2
    assert value("pyramidnet_requests_total", route="/readyz", code="OK") == 0
    assert value("pyramidnet_requests_total", route="/metrics", code="OK") == 0
    assert value("pyramidnet_requests_total", route="other", code="OK") == 0


def test_every_route_has_its_ok_and_shed_series_before_any_request():
    expect([Route(UNUSED_ROUTE, Kind.QUERY)])
    assert REGISTRY.get_sample_value("pyramidnet_requests_total", {"route": UNUSED_ROUTE, "code": "OK"}) == 0
    assert REGISTRY.get_sample_value("pyramidnet_shed_requests_total", {"route": UNUSED_ROUTE}) == 0


def test_shed_requests_are_counted_by_route(tmp_path):
    ledger = Ledger(tmp_path / "ledger", 1, 0)
    ledger.learn(1.0)
    ledger.add(5)  # 5 s queued: anything more is over the 1 s budget
    shed, answered = (
        value("pyramidnet_shed_requests_total", route="/classify_json"),
        value("pyramidnet_requests_total", route="/classify_json", code="OVERLOADED"),
    )
    refused = run(_post(edge(ledger=ledger, budget_s=1.0, max_hold_s=0.01), "/classify_json", **ONE))
    assert refused.status_code == 503
    assert value("pyramidnet_shed_requests_total", route="/classify_json") == shed + 1
    assert value("pyramidnet_requests_total", route="/classify_json", code="OVERLOADED") == answered + 1


def test_admission_publishes_the_images_in_flight_and_the_wait_one_more_image_would_expect(tmp_path):
    ledger = Ledger(tmp_path / "ledger", 2, 0)
    other_worker = Ledger(tmp_path / "ledger", 2, 1)
    other_worker.learn(0.1)
    other_worker.add(4)

    async def scenario():
        async with edge(ledger=ledger, budget_s=10.0) as c:
            call = asyncio.create_task(c.post("/slow?s=0.3", **THREE))
            await asyncio.sleep(0.1)
            during = value("pyramidnet_images_in_flight"), value("pyramidnet_expected_wait_seconds")
            await call
            return during

    (in_flight, wait) = run(scenario())
    # This worker's own images (the scrape adds every worker's), and the whole server's queue:
    # 4 images there, 3 here, and one more, at the 0.1 s per image measured.
    assert in_flight == 3
    assert wait == pytest.approx((4 + 3 + 1) * 0.1)
    assert value("pyramidnet_images_in_flight") == 0
    per_image = ledger.measured_seconds_per_image()
    assert value("pyramidnet_expected_wait_seconds") == pytest.approx((4 + 1) * per_image)


def test_predictions_are_counted_by_label_with_their_confidence():
    classes = ["cat", "dog", "ship"]
    probabilities = np.array([[0.9, 0.05, 0.05], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1], [0.34, 0.33, 0.33]])
    before = {c: value("pyramidnet_predictions_total", label=c) for c in classes}
    below_half = value("pyramidnet_top1_confidence_ratio_bucket", le="0.5")
    counted = value("pyramidnet_top1_confidence_ratio_count")
    telemetry.observe_predictions(probabilities, classes)
    assert {c: value("pyramidnet_predictions_total", label=c) - before[c] for c in classes} == {
        "cat": 3,
        "dog": 1,
        "ship": 0,
    }
    assert value("pyramidnet_top1_confidence_ratio_count") == counted + 4
    assert value("pyramidnet_top1_confidence_ratio_bucket", le="0.5") == below_half + 1  # the 0.34


def test_no_label_takes_a_value_from_a_request():
    """Random paths, methods and made-up error codes: every label value stays in a fixed set."""

    class MadeUp(ApiError):  # an error whose code is outside the contract
        status, code = 400, "".join(random.choices(string.ascii_uppercase, k=12))

    @answers_errors
    async def made_up(request: Request) -> Response:
        raise MadeUp("made up")

    routes = TABLE.with_route(Route("/made_up", Kind.QUERY))
    app = tiny_app(Path_("/made_up", made_up, methods=["POST"]))
    rng = random.Random(7)

    async def scenario():
        async with edge(routes=routes, app=app) as c:
            for _ in range(60):
                path = "/" + "".join(rng.choices(string.ascii_letters + "/._-%", k=rng.randint(1, 30)))
                await c.request(rng.choice(["GET", "POST", "PUT", "DELETE"]), path)
                await c.post(rng.choice(["/made_up", "/classify_batch"]))

    run(scenario())
    assert value("pyramidnet_requests_total", route="/made_up", code="INTERNAL") > 0  # its code is not a label
    allowed = {  # the routes of this test, of the table the others use, and of the one test_edge.py adds
        "route": {*routes, UNUSED_ROUTE, ADDED_ROUTE.path, telemetry.OTHER_ROUTE},
        "code": telemetry.CODES,
    }
    for family in REGISTRY.collect():
        if not family.name.startswith("pyramidnet_"):
            continue
        for sample in family.samples:
            for label, given in sample.labels.items():
                if label in allowed:
                    assert given in allowed[label], (sample.name, label, given)
