"""The Open Inference Protocol (KServe v2) on the shared server, called by the real clients of two
other serving systems: Triton's (`tritonclient[http]`) and KServe's SDK (`InferenceRESTClient`).
Their answers must be /classify's, bit for bit; bad requests get a coded 4xx in the protocol's shape."""

from __future__ import annotations

import asyncio
import base64
import json

import httpx
import hypothesis
import numpy as np
import pytest
import tritonclient.http as triton
from hypothesis import strategies as st
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig
from kserve.protocol.rest import v2_datamodels as kserve_v2
from tritonclient.utils import InferenceServerException

from model_store import CIFAR10_CLASSES, Settings, decode_image, preprocess_batch, read_spec
from model_store.errors import ALL_ERRORS, ModelNotFound

CODES = {e.code for e in ALL_ERRORS} | {ModelNotFound.code}


@pytest.fixture(scope="module")
def model(default_model) -> tuple[str, str]:
    return default_model.tag.name, default_model.tag.version


@pytest.fixture(scope="module")
def triton_client(server) -> triton.InferenceServerClient:
    client = triton.InferenceServerClient(server.url.removeprefix("http://"), network_timeout=120)
    yield client
    client.close()


def images(sample_jpegs, n: int) -> list[bytes]:
    return [p.read_bytes() for p in sample_jpegs[:n]]


def classified(server, files: list[bytes]) -> np.ndarray:
    """/classify_batch's probabilities of `files` (one request: the batch the protocol's request forms)."""
    answer = httpx.post(
        f"{server.url}/classify_batch",
        files=[("images", (f"{i}.jpg", f, "image/jpeg")) for i, f in enumerate(files)],
        timeout=120,
    )
    assert answer.status_code == 200, answer.text
    return np.array([[p["probabilities"][c] for c in CIFAR10_CLASSES] for p in answer.json()], dtype=np.float32)


@pytest.fixture(scope="module")
def pixels(default_model):
    """Files -> the float32 batch a client of the FP32 input sends: preprocessed as the model's spec records."""
    spec, settings = read_spec(default_model), Settings()

    def preprocessed(files: list[bytes]) -> np.ndarray:
        decoded = [
            decode_image(f, max_pixels=settings.max_image_pixels, formats=settings.allowed_formats) for f in files
        ]
        return preprocess_batch(decoded, spec)

    return preprocessed


# --- Triton's client ---------------------------------------------------------------------------


def test_tritonclient_sees_a_live_ready_server_and_the_models_metadata(triton_client, model):
    name, version = model
    assert triton_client.is_server_live()
    assert triton_client.is_server_ready()
    assert triton_client.is_model_ready(name)
    assert triton_client.is_model_ready(name, version)
    assert not triton_client.is_model_ready("resnet50")
    server = triton_client.get_server_metadata()
    assert {"classification", "binary_tensor_data"} <= set(server["extensions"])
    metadata = triton_client.get_model_metadata(name, version)
    assert metadata["versions"] == [version]
    assert {(t["name"], t["datatype"], tuple(t["shape"])) for t in metadata["inputs"]} == {
        ("images", "BYTES", (-1,)),
        ("pixels", "FP32", (-1, 3, 32, 32)),
    }
    assert metadata["outputs"] == [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]}]


@pytest.mark.parametrize("binary", [True, False], ids=["binary-data", "json"])
def test_tritonclient_bytes_input_answers_classify_batchs_probabilities_bit_for_bit(
    server, triton_client, model, sample_jpegs, binary
):
    files = images(sample_jpegs, 8)
    tensor = triton.InferInput("images", [len(files)], "BYTES")
    # In JSON a BYTES element is a string: the files go as base64; in binary data, as they are.
    tensor.set_data_from_numpy(
        np.array(files if binary else [base64.b64encode(f) for f in files], dtype=object), binary_data=binary
    )
    requested = triton.InferRequestedOutput("probabilities", binary_data=binary)
    result = triton_client.infer(model[0], [tensor], outputs=[requested], request_id="t-1")
    assert result.get_response()["id"] == "t-1"
    assert (result.get_response()["model_name"], result.get_response()["model_version"]) == model
    assert np.array_equal(result.as_numpy("probabilities"), classified(server, files))


@pytest.mark.parametrize("compression", ["gzip", "deflate"])
def test_a_compressed_request_from_tritonclient_answers_the_same(
    server, triton_client, model, sample_jpegs, compression
):
    files = images(sample_jpegs, 4)
    tensor = triton.InferInput("images", [len(files)], "BYTES")
    tensor.set_data_from_numpy(np.array(files, dtype=object))
    result = triton_client.infer(model[0], [tensor], request_compression_algorithm=compression)
    assert np.array_equal(result.as_numpy("probabilities"), classified(server, files))


def test_one_image_by_tritonclient_answers_what_classify_answers(server, triton_client, model, sample_jpegs):
    for data in images(sample_jpegs, 3):
        tensor = triton.InferInput("images", [1], "BYTES")
        tensor.set_data_from_numpy(np.array([data], dtype=object))
        got = triton_client.infer(model[0], [tensor], model_version=model[1]).as_numpy("probabilities")[0]
        answer = httpx.post(f"{server.url}/classify", content=data, headers={"content-type": "image/jpeg"}, timeout=60)
        assert np.array_equal(got, np.array([answer.json()["probabilities"][c] for c in CIFAR10_CLASSES], np.float32))


def test_tritonclient_fp32_input_answers_the_same_probabilities(server, triton_client, model, sample_jpegs, pixels):
    files = images(sample_jpegs, 8)
    tensor = triton.InferInput("pixels", [len(files), 3, 32, 32], "FP32")
    tensor.set_data_from_numpy(pixels(files))
    got = triton_client.infer(model[0], [tensor]).as_numpy("probabilities")
    assert np.array_equal(got, classified(server, files))


def test_tritonclient_classification_gives_the_top_labels(server, triton_client, model, sample_jpegs):
    files = images(sample_jpegs, 4)
    tensor = triton.InferInput("images", [len(files)], "BYTES")
    tensor.set_data_from_numpy(np.array(files, dtype=object))
    top = triton_client.infer(
        model[0], [tensor], outputs=[triton.InferRequestedOutput("probabilities", class_count=3)]
    ).as_numpy("probabilities")
    expected = classified(server, files)
    assert top.shape == (4, 3)
    for row, probabilities in zip(top, expected, strict=True):
        indices = [int(entry.decode().split(":")[1]) for entry in row]
        assert indices == list(np.argsort(-probabilities, kind="stable")[:3])
        assert [entry.decode().split(":", 2)[2] for entry in row] == [CIFAR10_CLASSES[i] for i in indices]


def test_tritonclient_gets_the_protocols_errors(triton_client, model):
    tensor = triton.InferInput("images", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([b"not an image"], dtype=object))
    with pytest.raises(InferenceServerException) as bad_image:
        triton_client.infer(model[0], [tensor])
    assert bad_image.value.status() == "400"
    with pytest.raises(InferenceServerException) as unknown:
        triton_client.infer("resnet50", [tensor])
    assert unknown.value.status() == "404"
    assert "serves 'pyramidnet-cifar10'" in unknown.value.message()


# --- KServe's client ---------------------------------------------------------------------------


def kserve_call(coroutine_of):
    async def run():
        client = InferenceRESTClient(RESTConfig(protocol="v2", timeout=120))
        try:
            return await coroutine_of(client)
        finally:
            await client.close()

    return asyncio.run(run())


def test_kserve_client_sees_a_live_ready_server(server, model):
    async def probe(client):
        return (
            await client.is_server_live(server.url),
            await client.is_server_ready(server.url),
            await client.is_model_ready(server.url, model[0]),
            await client.is_model_ready(server.url, "resnet50"),
        )

    assert kserve_call(probe) == (True, True, True, False)


def test_the_metadata_is_kserves_own_response_models_exactly(server, model):
    """KServe's SDK has no REST metadata call: its server's response models read ours, and hold nothing more."""
    for path, response_model in [
        ("/v2", kserve_v2.ServerMetadataResponse),
        (f"/v2/models/{model[0]}", kserve_v2.ModelMetadataResponse),
        (f"/v2/models/{model[0]}/versions/{model[1]}", kserve_v2.ModelMetadataResponse),
        (f"/v2/models/{model[0]}/ready", kserve_v2.ModelReadyResponse),
        ("/v2/health/live", kserve_v2.ServerLiveResponse),
        ("/v2/health/ready", kserve_v2.ServerReadyResponse),
    ]:
        answer = httpx.get(server.url + path, timeout=30)
        assert answer.status_code == 200, (path, answer.text)
        if "/health/" not in path:  # an API answer, not a probe's
            assert answer.headers["x-content-type-options"] == "nosniff", path
        assert response_model.model_validate(answer.json()).model_dump(exclude_unset=True) == answer.json()


@pytest.mark.parametrize("binary", [True, False], ids=["binary-data", "json"])
def test_kserve_client_bytes_and_fp32_inputs_answer_classify_batchs_probabilities(
    server, model, sample_jpegs, pixels, binary
):
    files = images(sample_jpegs, 6)

    async def infer(client):
        encoded = InferInput("images", [len(files)], "BYTES")
        encoded.set_data_from_numpy(
            np.array(files if binary else [base64.b64encode(f) for f in files], dtype=object), binary_data=binary
        )
        preprocessed = InferInput("pixels", [len(files), 3, 32, 32], "FP32")
        preprocessed.set_data_from_numpy(pixels(files), binary_data=binary)
        answers = []
        for tensor in (encoded, preprocessed):
            request = InferRequest(model[0], [tensor], request_id="k-1")
            answers.append(await client.infer(server.url, request, model_name=model[0]))
        return answers

    expected = classified(server, files)
    for answer in kserve_call(infer):
        assert answer.id == "k-1"
        assert answer.model_name == model[0]  # (KServe's InferResponse.from_bytes drops model_version)
        assert np.array_equal(answer.outputs[0].as_numpy(), expected)


# --- Errors and fuzzing ------------------------------------------------------------------------


def infer_raw(server, model, body, content_type="application/json", path=None, **headers) -> httpx.Response:
    url = server.url + (path or f"/v2/models/{model[0]}/infer")
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(url, content=content, headers={"content-type": content_type, **headers}, timeout=60)


def assert_protocol_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert isinstance(body["error"], str)
    assert body["error"]
    assert body["code"] == code
    assert body["request_id"] == response.headers["x-request-id"]


def test_bad_requests_get_a_coded_4xx_in_the_protocols_shape(server, model, sample_jpegs):
    settings = Settings()
    one = base64.b64encode(sample_jpegs[0].read_bytes()).decode()

    def images_input(data, shape=None, datatype="BYTES"):
        return {"inputs": [{"name": "images", "shape": shape or [len(data)], "datatype": datatype, "data": data}]}

    assert_protocol_error(infer_raw(server, model, images_input(["%%%not base64%%%"])), 400, "VALIDATION_ERROR")
    assert_protocol_error(infer_raw(server, model, images_input([one], datatype="FP32")), 400, "VALIDATION_ERROR")
    assert_protocol_error(infer_raw(server, model, images_input([one], shape=[3])), 400, "VALIDATION_ERROR")
    assert_protocol_error(infer_raw(server, model, images_input(["bm90IGFuIGltYWdl"])), 400, "INVALID_IMAGE")
    too_many = images_input([one] * (settings.max_images_per_request + 1))
    assert_protocol_error(infer_raw(server, model, too_many), 413, "TOO_MANY_IMAGES")
    huge = {"inputs": [{"name": "pixels", "shape": [1, 3, 32, 32], "datatype": "FP32", "data": [0.5] * 3073}]}
    assert_protocol_error(infer_raw(server, model, huge), 400, "VALIDATION_ERROR")
    assert_protocol_error(infer_raw(server, model, b"<xml/>", "text/xml"), 415, "UNSUPPORTED_MEDIA_TYPE")
    for path in ["/v2/models/resnet50/infer", f"/v2/models/{model[0]}/versions/0000/infer"]:
        assert_protocol_error(infer_raw(server, model, images_input([one]), path=path), 404, "MODEL_NOT_FOUND")
    for path in ["/v2/models/resnet50", f"/v2/models/{model[0]}/versions/0000/ready"]:
        assert_protocol_error(httpx.get(server.url + path, timeout=30), 404, "MODEL_NOT_FOUND")
    assert_protocol_error(httpx.get(server.url + "/v2/repository/index", timeout=30), 404, "NOT_FOUND")
    wrong_method = httpx.post(server.url + "/v2/health/live", timeout=30)
    assert_protocol_error(wrong_method, 405, "METHOD_NOT_ALLOWED")
    assert "GET" in wrong_method.headers["allow"]


TENSOR = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["images", "pixels", "x"]),
        "shape": st.lists(st.integers(-2, 70), max_size=5),
        "datatype": st.sampled_from(["BYTES", "FP32", "INT64", ""]),
    },
    optional={
        "data": st.lists(
            st.one_of(st.text(max_size=12), st.floats(), st.integers(), st.none(), st.booleans()), max_size=8
        ),
        "parameters": st.dictionaries(st.sampled_from(["binary_data_size", "other"]), st.integers(-1, 9), max_size=2),
    },
)


@hypothesis.given(
    inputs=st.lists(TENSOR, max_size=2),
    outputs=st.none() | st.lists(st.fixed_dictionaries({"name": st.sampled_from(["probabilities", "y"])}), max_size=2),
    parameters=st.none() | st.dictionaries(st.sampled_from(["binary_data_output", "z"]), st.booleans() | st.integers()),
    header_length=st.none() | st.integers(-1, 400).map(str),
)
@hypothesis.settings(max_examples=150, deadline=None, derandomize=True)
def test_an_inference_request_of_any_shape_gets_an_answer_or_a_coded_4xx(
    server, model, inputs, outputs, parameters, header_length
):
    body = {"inputs": inputs} | ({"outputs": outputs} if outputs is not None else {})
    body |= {"parameters": parameters} if parameters is not None else {}
    headers = {"inference-header-content-length": header_length} if header_length is not None else {}
    content = json.dumps(body).encode() + (b"\x00\x01" if header_length is not None else b"")
    response = infer_raw(server, model, content, **headers)
    assert response.status_code < 500, response.text[:500]
    if response.status_code != 200:
        assert response.json()["code"] in CODES, response.text[:500]
