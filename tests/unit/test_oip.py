"""The Open Inference Protocol's codec (model_store.oip) on its own: what it accepts, what it refuses
with which code, and answers a real client library decodes (tritonclient's own wire-format helpers)."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
from tritonclient.utils import deserialize_bytes_tensor, serialize_byte_tensor

from model_store import CIFAR10_CLASSES
from model_store.errors import ApiError
from model_store.oip import HEADER_LENGTH, InferLimits, InferRequest, encode_infer, inflate, parse_infer

LIMITS = InferLimits(max_images=4, max_file_bytes=1000, image_shape=(3, 32, 32))
FILES = [b"\x89PNG first", b"\xff\xd8 second"]


def json_request(inputs: list[dict], **more) -> tuple[str, None, bytes]:
    return "application/json", None, json.dumps({"inputs": inputs, **more}).encode()


def binary_request(tensor: dict, raw: bytes, **more) -> tuple[str, str, bytes]:
    header = json.dumps({"inputs": [{**tensor, "parameters": {"binary_data_size": len(raw)}}], **more}).encode()
    return "application/octet-stream", str(len(header)), header + raw


def refused(request: tuple, limits: InferLimits = LIMITS) -> tuple[int, str, str]:
    with pytest.raises(ApiError) as caught:
        parse_infer(*request, limits)
    return caught.value.status, caught.value.code, str(caught.value)


def test_images_arrive_as_the_same_bytes_in_base64_json_and_in_binary_data():
    encoded = [base64.b64encode(f).decode() for f in FILES]
    as_json = parse_infer(
        *json_request([{"name": "images", "shape": [2], "datatype": "BYTES", "data": encoded}]), LIMITS
    )
    raw = serialize_byte_tensor(np.array(FILES, dtype=object)).item()  # tritonclient's wire format
    as_binary = parse_infer(*binary_request({"name": "images", "shape": [2], "datatype": "BYTES"}, raw), LIMITS)
    assert as_json.images == as_binary.images == FILES
    assert as_json.count == as_binary.count == 2
    assert as_json.pixels is None


def test_pixels_arrive_as_the_same_float32_batch_flat_nested_and_in_binary_data():
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    tensor = {"name": "pixels", "shape": [2, 3, 32, 32], "datatype": "FP32"}
    flat = parse_infer(*json_request([{**tensor, "data": x.ravel().tolist()}]), LIMITS)
    nested = parse_infer(*json_request([{**tensor, "data": x.tolist()}]), LIMITS)
    binary = parse_infer(*binary_request(tensor, x.astype("<f4").tobytes()), LIMITS)
    for parsed in (flat, nested, binary):
        assert parsed.pixels.dtype == np.float32
        assert parsed.pixels.flags.c_contiguous
        assert np.array_equal(parsed.pixels, x)
        assert parsed.count == 2


@pytest.mark.parametrize(
    ("request_", "status", "code", "says"),
    [
        (
            json_request([{"name": "images", "shape": [1], "datatype": "BYTES", "data": ["not base64!"]}]),
            400,
            "VALIDATION_ERROR",
            "not base64",
        ),
        (
            json_request([{"name": "images", "shape": [1], "datatype": "FP32", "data": ["aGk="]}]),
            400,
            "VALIDATION_ERROR",
            "is BYTES, not 'FP32'",
        ),
        (
            json_request([{"name": "pixels", "shape": [1, 3, 32, 32], "datatype": "INT8", "data": [0]}]),
            400,
            "VALIDATION_ERROR",
            "is FP32, not 'INT8'",
        ),
        (
            json_request([{"name": "images", "shape": [2], "datatype": "BYTES", "data": ["aGk="]}]),
            400,
            "VALIDATION_ERROR",
            "shape [2] but 1 elements",
        ),
        (
            json_request([{"name": "pixels", "shape": [1, 3, 32, 32], "datatype": "FP32", "data": [0.0] * 10}]),
            400,
            "VALIDATION_ERROR",
            "but 10 elements",
        ),
        (
            json_request([{"name": "pixels", "shape": [1, 3, 16, 16], "datatype": "FP32", "data": [0.0] * 768}]),
            400,
            "VALIDATION_ERROR",
            "expected [N, 3, 32, 32]",
        ),
        (
            json_request(
                [{"name": "pixels", "shape": [1, 3, 32, 32], "datatype": "FP32", "data": [[0.0], [0.0, 1.0]]}]
            ),
            400,
            "VALIDATION_ERROR",
            "ragged",
        ),
        (
            json_request([{"name": "pixels", "shape": [1, 3, 32, 32], "datatype": "FP32", "data": ["a"] * 3072}]),
            400,
            "VALIDATION_ERROR",
            "takes numbers",
        ),
        (
            json_request([{"name": "images", "shape": [5], "datatype": "BYTES", "data": ["aGk="] * 5}]),
            413,
            "TOO_MANY_IMAGES",
            "the limit is 4",
        ),
        (
            json_request([{"name": "pixels", "shape": [10**9, 3, 32, 32], "datatype": "FP32", "data": [0.0]}]),
            413,
            "TOO_MANY_IMAGES",
            "the limit is 4",
        ),
        (
            json_request(
                [
                    {
                        "name": "images",
                        "shape": [1],
                        "datatype": "BYTES",
                        "data": [base64.b64encode(b"x" * 1001).decode()],
                    }
                ]
            ),
            413,
            "PAYLOAD_TOO_LARGE",
            "the limit is 1,000",
        ),
        (
            json_request([{"name": "images", "shape": [0], "datatype": "BYTES", "data": []}]),
            400,
            "VALIDATION_ERROR",
            "N ≥ 1",
        ),
        (
            json_request([{"name": "INPUT__0", "shape": [1], "datatype": "BYTES", "data": ["aGk="]}]),
            400,
            "VALIDATION_ERROR",
            "unknown input 'INPUT__0'",
        ),
        (
            json_request([{"name": "images", "shape": [1], "datatype": "BYTES"}]),
            400,
            "VALIDATION_ERROR",
            "neither data nor binary_data_size",
        ),
        (
            json_request(
                [{"name": "images", "shape": [1], "datatype": "BYTES", "data": ["aGk="]}], outputs=[{"name": "logits"}]
            ),
            400,
            "VALIDATION_ERROR",
            "answers 'probabilities' only",
        ),
        (
            json_request(
                [{"name": "images", "shape": [1], "datatype": "BYTES", "data": ["aGk="]}],
                outputs=[{"name": "probabilities", "parameters": {"classification": 0}}],
            ),
            400,
            "VALIDATION_ERROR",
            "positive integer",
        ),
        (json_request([]), 400, "VALIDATION_ERROR", "at least 1 item"),
        (("application/json", None, b"{not json"), 400, "VALIDATION_ERROR", "Invalid JSON"),
        (("text/plain", None, b"{}"), 415, "UNSUPPORTED_MEDIA_TYPE", "application/json"),
        (("application/octet-stream", None, b"{}"), 400, "VALIDATION_ERROR", "Inference-Header-Content-Length"),
        (("application/octet-stream", "99", b"{}"), 400, "VALIDATION_ERROR", "the body is 2 bytes"),
        (
            binary_request({"name": "images", "shape": [1], "datatype": "BYTES"}, b"\x05\x00\x00\x00abc"),
            400,
            "VALIDATION_ERROR",
            "ends inside element 0",
        ),
        (
            binary_request({"name": "pixels", "shape": [1, 3, 32, 32], "datatype": "FP32"}, b"\x00" * 12),
            400,
            "VALIDATION_ERROR",
            "takes 12,288 bytes, not 12",
        ),
    ],
)
def test_a_bad_request_is_refused_with_its_code_and_a_reason(request_, status, code, says):
    got_status, got_code, message = refused(request_)
    assert (got_status, got_code) == (status, code)
    assert says in message


def test_non_finite_pixels_are_refused():
    x = np.zeros((1, 3, 32, 32), dtype=np.float32)
    x[0, 1, 2, 3] = np.nan
    tensor = {"name": "pixels", "shape": [1, 3, 32, 32], "datatype": "FP32"}
    assert refused(binary_request(tensor, x.tobytes()))[:2] == (400, "VALIDATION_ERROR")


def test_the_answer_carries_the_probabilities_exactly_in_json_and_in_binary_data():
    p = np.random.default_rng(1).dirichlet(np.ones(10), size=3).astype(np.float32)
    body, headers = encode_infer(InferRequest(id="r-7", images=[b""] * 3), p, "m", "v1", CIFAR10_CLASSES)
    answer = json.loads(body)
    assert headers["content-type"] == "application/json"
    assert (answer["model_name"], answer["model_version"], answer["id"]) == ("m", "v1", "r-7")
    (output,) = answer["outputs"]
    assert (output["name"], output["datatype"], output["shape"]) == ("probabilities", "FP32", [3, 10])
    assert np.array_equal(np.array(output["data"], dtype=np.float32).reshape(3, 10), p)

    body, headers = encode_infer(
        InferRequest(id=None, images=[b""] * 3, binary_output=True), p, "m", "v1", CIFAR10_CLASSES
    )
    length = int(headers[HEADER_LENGTH])
    header = json.loads(body[:length])
    assert "id" not in header
    assert "data" not in header["outputs"][0]
    assert header["outputs"][0]["parameters"] == {"binary_data_size": len(body) - length}
    assert np.array_equal(np.frombuffer(body[length:], dtype="<f4").reshape(3, 10), p)


def test_classification_answers_the_top_k_as_tritons_value_index_label_strings():
    p = np.array([[0.05, 0.6, 0.05, 0.3] + [0.0] * 6], dtype=np.float32)
    request = InferRequest(id=None, images=[b""], classification=2, binary_output=True)
    body, headers = encode_infer(request, p, "m", "v1", CIFAR10_CLASSES)
    length = int(headers[HEADER_LENGTH])
    header = json.loads(body[:length])
    assert (header["outputs"][0]["datatype"], header["outputs"][0]["shape"]) == ("BYTES", [1, 2])
    strings = deserialize_bytes_tensor(body[length:])
    assert [s.decode() for s in strings] == ["0.600000:1:automobile", "0.300000:3:cat"]

    body, _ = encode_infer(InferRequest(id=None, images=[b""], classification=2), p, "m", "v1", CIFAR10_CLASSES)
    assert json.loads(body)["outputs"][0]["data"] == ["0.600000:1:automobile", "0.300000:3:cat"]

    body, _ = encode_infer(InferRequest(id=None, images=[b""], classification=50), p, "m", "v1", CIFAR10_CLASSES)
    everything = json.loads(body)["outputs"][0]
    assert everything["shape"] == [1, 10]
    assert len(everything["data"]) == 10


def test_a_body_without_a_content_type_is_read_as_json_as_triton_does():
    tensor = {"name": "images", "shape": [1], "datatype": "BYTES", "data": ["aGk="]}
    assert parse_infer("", None, json.dumps({"inputs": [tensor]}).encode(), LIMITS).images == [b"hi"]


def test_requested_outputs_choose_binary_data_and_classification():
    tensor = {"name": "images", "shape": [1], "datatype": "BYTES", "data": ["aGk="]}
    plain = parse_infer(*json_request([tensor]), LIMITS)
    assert (plain.classification, plain.binary_output) == (None, False)
    everything = parse_infer(*json_request([tensor], parameters={"binary_data_output": True}), LIMITS)
    assert everything.binary_output
    per_output = parse_infer(
        *json_request(
            [tensor], outputs=[{"name": "probabilities", "parameters": {"classification": 3, "binary_data": True}}]
        ),
        LIMITS,
    )
    assert (per_output.classification, per_output.binary_output) == (3, True)
    kserve = parse_infer(*json_request([tensor], model_name="pyramidnet-cifar10", id="x"), LIMITS)
    assert kserve.id == "x"


def test_the_documents_examples_are_valid_bodies_and_answers():
    """Each example the OpenAPI document shows is what its model accepts: parsed by the same code."""
    from pydantic import TypeAdapter

    from model_store import oip, schemas
    from model_store.edge.examples import EXAMPLES

    models = {**vars(schemas), **vars(oip)}
    for name, example in EXAMPLES.items():
        TypeAdapter(models[name]).validate_python(example, strict=False)
    request = parse_infer("application/json", None, json.dumps(EXAMPLES["InferenceRequest"]).encode(), LIMITS)
    assert (request.count, request.classification) == (1, 2)
    assert request.images[0].startswith(b"\x89PNG")


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "identity", ""])
def test_a_compressed_body_is_inflated_as_tritonclient_compresses_it(encoding):
    import gzip
    import zlib

    body = json.dumps({"inputs": [{"name": "images", "shape": [1], "datatype": "BYTES", "data": ["aGk="]}]}).encode()
    sent = {"gzip": gzip.compress, "deflate": zlib.compress}.get(encoding, bytes)(body)
    assert inflate(sent, encoding, limit=10_000) == body


def test_a_body_that_inflates_past_the_limit_or_is_not_what_it_claims_is_refused():
    import gzip

    bomb = gzip.compress(b"\x00" * 10_000_000)  # 10 MB of zeros in about 10 kB
    with pytest.raises(ApiError) as caught:
        inflate(bomb, "gzip", limit=100_000)
    assert (caught.value.status, caught.value.code) == (413, "PAYLOAD_TOO_LARGE")
    for body, encoding, code in [
        (b"not gzip at all", "gzip", "VALIDATION_ERROR"),
        (gzip.compress(b"{}" * 100)[:20], "gzip", "VALIDATION_ERROR"),
        (b"{}", "br", "UNSUPPORTED_MEDIA_TYPE"),
    ]:
        with pytest.raises(ApiError) as caught:
            inflate(body, encoding, limit=100_000)
        assert caught.value.code == code, (body, encoding)
