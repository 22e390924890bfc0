"""Traces, end to end: the server's real OTLP/HTTP exporters (the API worker's and the runner's) send
to an OTLP receiver this test runs; the spans are decoded from the protocol's protobuf and checked
against the client's traceparent, one another, and the access log."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from ..servers import Server, start_server, stop_server

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
CLIENT_SPAN = "b7ad6b7169203331"
SECRET = "client-chosen-f00d"  # in a header, a file name and a query: no span may carry it


class Receiver(ThreadingHTTPServer):
    """An OTLP/HTTP trace receiver: POST /v1/traces, protobuf in, spans kept as (resource, span)."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.spans: list[tuple[str, Span]] = []
        self.lock = threading.Lock()
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1/traces"

    def wait_for(self, predicate, timeout: float = 20.0) -> list[tuple[str, Span]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                spans = list(self.spans)
            if predicate(spans):
                return spans
            time.sleep(0.2)
        raise AssertionError(f"spans not received in {timeout} s: {[s.name for _, s in spans]}")


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        assert self.path == "/v1/traces"
        assert self.headers["Content-Type"] == "application/x-protobuf"
        request = ExportTraceServiceRequest.FromString(self.rfile.read(int(self.headers["Content-Length"])))
        with self.server.lock:
            for resource in request.resource_spans:
                service = next(a.value.string_value for a in resource.resource.attributes if a.key == "service.name")
                for scope in resource.scope_spans:
                    self.server.spans.extend((service, span) for span in scope.spans)
        body = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def traced(default_model, tmp_path_factory):
    receiver = Receiver()
    srv = start_server(
        str(default_model.tag),
        tmp_path_factory.mktemp("traced") / "serve.log",
        otlp_endpoint=receiver.endpoint,
        trace_sample_rate="1.0",
    )
    yield srv, receiver
    stop_server(srv)
    receiver.shutdown()


def attributes(span: Span) -> dict:
    """A span's attributes as Python values (OTLP's AnyValue: the one field set)."""
    return {a.key: getattr(a.value, a.value.WhichOneof("value")) for a in span.attributes}


def hex_id(raw: bytes) -> str:
    return raw.hex()


def access_lines(server: Server) -> list[dict]:
    return [json.loads(line) for line in server.log.read_text().splitlines() if '"pyramidnet.access"' in line]


def test_a_request_is_traced_from_the_edge_through_admission_and_the_runner(traced, sample_jpegs):
    server, receiver = traced
    response = httpx.post(
        f"{server.url}/classify?note={SECRET}",
        files={"image": (f"{SECRET}.jpg", sample_jpegs[0].read_bytes(), "image/jpeg")},
        headers={"traceparent": f"00-{TRACE_ID}-{CLIENT_SPAN}-01", "User-Agent": SECRET},
    )
    assert response.status_code == 200

    def complete(spans):
        ours = [s for _, s in spans if hex_id(s.trace_id) == TRACE_ID]
        return {"POST /classify", "admission", "runner call"} <= {s.name for s in ours} and any(
            service == "pyramidnet_runner" for service, s in spans if hex_id(s.trace_id) == TRACE_ID
        )

    spans = [(service, s) for service, s in receiver.wait_for(complete) if hex_id(s.trace_id) == TRACE_ID]
    by_name = {s.name: s for _, s in spans}
    edge, admission, call = by_name["POST /classify"], by_name["admission"], by_name["runner call"]
    # The chain: the client's span -> the edge's server span -> admission, and the runner call -> the runner's span.
    assert hex_id(edge.parent_span_id) == CLIENT_SPAN
    assert edge.kind == Span.SPAN_KIND_SERVER
    assert admission.parent_span_id == edge.span_id
    assert call.parent_span_id == edge.span_id
    runner = [s for service, s in spans if service == "pyramidnet_runner" and s.parent_span_id == call.span_id]
    assert runner, [(service, s.name) for service, s in spans]
    assert attributes(call)["pyramidnet.images"] >= 1
    assert edge.start_time_unix_nano <= admission.start_time_unix_nano <= call.start_time_unix_nano
    assert call.end_time_unix_nano <= edge.end_time_unix_nano

    # The access line, the span and the metrics describe the request alike: ids, route, code, duration.
    seen = attributes(edge)
    assert seen["http.route"] == "/classify"
    assert (seen["http.response.status_code"], seen["pyramidnet.code"], seen["pyramidnet.images"]) == (200, "OK", 1)
    (line,) = [entry for entry in access_lines(server) if entry.get("trace_id") == TRACE_ID]
    assert line["span_id"] == hex_id(edge.span_id)
    assert line["request_id"] == seen["pyramidnet.request_id"] == response.headers["x-request-id"]
    assert line["latency_ms"] == seen["pyramidnet.latency_ms"]
    assert line["latency_ms"] == pytest.approx((edge.end_time_unix_nano - edge.start_time_unix_nano) / 1e6, abs=0.001)

    # The API's probes of the runner open no trace.
    assert not [s.name for _, s in receiver.spans if "readyz" in s.name or "livez" in s.name]
    # No span carries an image or a string the client chose.
    every_value = json.dumps([attributes(s) for _, s in receiver.spans] + [s.name for _, s in receiver.spans])
    assert SECRET not in every_value
    assert "JFIF" not in every_value


def test_an_error_answer_is_traced_with_its_code_and_a_new_trace_begins_without_a_traceparent(traced):
    server, receiver = traced
    response = httpx.post(f"{server.url}/classify", files={"image": ("x.png", b"not an image", "image/png")})
    assert response.status_code == 400
    request_id = response.headers["x-request-id"]  # a new request's id is its trace's
    spans = receiver.wait_for(lambda spans: any(hex_id(s.trace_id) == request_id for _, s in spans))
    (edge,) = [s for _, s in spans if hex_id(s.trace_id) == request_id and s.name == "POST /classify"]
    assert edge.parent_span_id == b""  # the root: no traceparent came
    assert attributes(edge)["pyramidnet.code"] == "INVALID_IMAGE"
    (line,) = [entry for entry in access_lines(server) if entry["request_id"] == request_id]
    assert (line["trace_id"], line["span_id"]) == (request_id, hex_id(edge.span_id))
    assert line["error_code"] == "INVALID_IMAGE"
