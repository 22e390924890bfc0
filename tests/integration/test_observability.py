"""What an operator sees from the shared server: request ids, access lines, headers, the documented errors."""

from __future__ import annotations

import json
import time

import httpx
from prometheus_client.parser import text_string_to_metric_families

import model_store
from model_store import Settings, telemetry
from model_store.edge import service_routes


def one(name: str, data: bytes, ctype: str = "image/png") -> dict:
    return {"files": {"image": (name, data, ctype)}}


def test_request_id_round_trip(server):
    given = "client-7f3a.42:retry-1"
    response = httpx.post(server.url + "/classify", headers={"X-Request-ID": given}, **one("a", b"bad"))
    assert response.headers["x-request-id"] == given
    assert response.json()["request_id"] == given
    correlated = httpx.post(server.url + "/model_info", headers={"X-Correlation-ID": "corr-1"})
    assert correlated.status_code == 200
    assert correlated.headers["x-request-id"] == "corr-1"
    for malformed in ("has spaces", "x" * 129, "new\\nline"):
        replaced = httpx.post(server.url + "/model_info", headers={"X-Request-ID": malformed}).headers["x-request-id"]
        assert replaced != malformed
        assert len(replaced) == 32
    time.sleep(0.2)
    lines = [json.loads(line) for line in server.log.read_text().splitlines() if line.startswith("{")]
    assert any(entry.get("request_id") == given and entry.get("status") == 400 for entry in lines)


def test_one_json_access_line_per_request(server, sample_jpegs):
    rid = "access-line-check"
    httpx.post(server.url + "/classify", headers={"X-Request-ID": rid}, **one("a.jpg", sample_jpegs[1].read_bytes()))
    time.sleep(0.2)
    entries = [json.loads(line) for line in server.log.read_text().splitlines() if rid in line]
    assert len(entries) == 1
    entry = entries[0]
    assert entry["logger"] == "pyramidnet.access"
    assert entry["level"] == "INFO"
    assert (entry["method"], entry["route"], entry["status"], entry["images"]) == ("POST", "/classify", 200, 1)
    assert entry["latency_ms"] > 0


def test_security_headers_and_no_auth_by_default(server, sample_jpegs):
    response = httpx.post(server.url + "/classify", **one("a.jpg", sample_jpegs[2].read_bytes()))
    assert response.status_code == 200
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-frame-options"] == "DENY"


def test_error_contract_is_in_the_openapi_schema(server):
    spec = httpx.get(server.url + "/docs.json").json()
    assert "ErrorResponse" in spec["components"]["schemas"]
    responses = spec["paths"]["/classify_batch"]["post"]["responses"]
    assert "TOO_MANY_IMAGES" in responses["413"]["description"]
    assert "Retry-After" in responses["503"]["headers"]


def test_the_openapi_document_describes_this_service_not_a_template(server):
    spec = httpx.get(server.url + "/docs.json").json()
    assert spec["info"]["version"] == model_store.__version__
    assert "contact" not in spec["info"]
    assert "BentoML" not in json.dumps(spec["tags"])
    assert all(tag["description"] for tag in spec["tags"])
    schemas = spec["components"]["schemas"]
    assert not [name for name in schemas if "IODescriptor" in name or "__" in name]  # framework-made names
    text = json.dumps(spec)
    assert not [name for name in schemas if f'"#/components/schemas/{name}"' not in text]  # none unreferenced
    warning = schemas["ModelInfo"]["properties"]["warning"]
    assert {"type": "null"} in warning["anyOf"]  # what /model_info answers when nothing needs saying


def pyramidnet_samples(server) -> list:
    return [
        sample
        for family in text_string_to_metric_families(server.metrics())
        if family.name.startswith("pyramidnet_")
        for sample in family.samples
    ]


def total(samples: list, name: str, **labels: str) -> float:
    return sum(s.value for s in samples if s.name == name and labels.items() <= s.labels.items())


def test_metrics_count_what_was_answered_with_labels_from_a_fixed_set(server, sample_jpegs):
    before = pyramidnet_samples(server)
    answers = [
        httpx.post(server.url + "/classify", **one(f"{i}.jpg", path.read_bytes(), "image/jpeg")).json()["label"]
        for i, path in enumerate(sample_jpegs[:6])
    ]
    httpx.post(server.url + "/classify", **one("a.png", b"not an image"))
    httpx.get(server.url + "/../etc/passwd?user=" + "x" * 50)
    httpx.post(server.url + "/classify_batch/some-id-7f3a")
    after = pyramidnet_samples(server)

    def delta(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    assert delta("pyramidnet_requests_total", route="/classify", code="OK") == 6
    assert delta("pyramidnet_requests_total", route="/classify", code="INVALID_IMAGE") == 1
    assert delta("pyramidnet_requests_total", route="other", code="NOT_FOUND") == 2
    for label in set(answers):
        assert delta("pyramidnet_predictions_total", label=label) == answers.count(label)
    assert delta("pyramidnet_top1_confidence_ratio_count") == 6
    assert delta("pyramidnet_request_duration_seconds_count", route="/classify") == 7
    info = [s for s in after if s.name == "pyramidnet_model_info"]
    assert [s.value for s in info] == [1]
    model = httpx.post(server.url + "/model_info").json()
    assert info[0].labels == {k: model[k] for k in ("tag", "precision", "backend", "device")}
    assert total(after, "pyramidnet_ready") == 1
    assert total(after, "pyramidnet_model_load_failed") == 0
    started = [s.value for s in after if s.name == "pyramidnet_start_time_seconds"]
    assert len(started) == 1  # the runner's: one series, not one per process
    assert 0 < time.time() - started[0] < 24 * 3600
    name, version = model["tag"].split(":")
    routes = service_routes(Settings(), name, version, model["input_size"])  # the route table's labels
    allowed = {
        "route": {route.label for route in routes.values() if route.counted} | {"other"},
        "code": telemetry.CODES,
        "label": set(model["classes"]),
    }
    for sample in after:
        for label, value in sample.labels.items():
            if label in allowed:
                assert value in allowed[label], sample
