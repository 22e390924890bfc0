"""The Open Inference Protocol (KServe v2, as Triton, KServe, MLServer and OpenVINO Model Server
speak it), REST, the core subset: what a request may say, parsed into an `InferRequest`; the answer
encoded from probabilities; the server's and the model's metadata.

The model takes exactly one input:
- `images`, BYTES `[N]`: encoded image files (base64 strings in JSON, raw bytes in binary data);
- `pixels`, FP32 `[N, 3, H, W]`: images already preprocessed as the model's spec records (resized,
  scaled to [0, 1], normalised by its mean and std).

It answers `probabilities`, FP32 `[N, classes]`; asked for `{"classification": k}`, that output is
BYTES `[N, k]` instead, the top k as `"<probability>:<index>:<label>"` (Triton's classification
extension). Both directions speak the binary tensor data extension (a JSON header whose length is in
`Inference-Header-Content-Length`, then the raw tensors), which tritonclient uses by default. A
request body may come gzip- or deflate-compressed (tritonclient's `request_compression_algorithm`),
inflated within the same limit as an uncompressed one.
"""

from __future__ import annotations

import json
import math
import struct
import zlib
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .encoded import decode_base64
from .errors import PayloadTooLarge, TooManyImages, UnsupportedMediaType, ValidationFailed
from .spec import ModelSpec

SERVER_NAME = "pyramidnet-bento"
PLATFORM = "bentoml"  # what serves the model (the network runs on OpenVINO or torch: /model_info says)
EXTENSIONS = ["classification", "binary_tensor_data"]
HEADER_LENGTH = "inference-header-content-length"
IMAGES, PIXELS, PROBABILITIES = "images", "pixels", "probabilities"
_SHOWN = 80  # characters of a client-chosen name quoted back in a message
_LENGTH = struct.Struct("<I")  # BYTES elements in binary data: a little-endian uint32 length, then the bytes


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RequestInput(_Strict):
    name: str = Field(description=f"`{IMAGES}` (BYTES) or `{PIXELS}` (FP32)")
    shape: list[int] = Field(description=f"`[N]` for {IMAGES}, `[N, 3, H, W]` for {PIXELS}")
    datatype: str = Field(description="BYTES or FP32, as the input's name requires")
    parameters: dict[str, Any] | None = Field(None, description="`binary_data_size`: the tensor is in binary data")
    data: list[Any] | None = Field(None, description="the tensor's elements, flat or nested, in row-major order")


class RequestOutput(_Strict):
    name: str = Field(description=f"`{PROBABILITIES}`")
    parameters: dict[str, Any] | None = Field(
        None, description="`classification`: the top k as BYTES instead; `binary_data`: answer it in binary data"
    )


class InferenceRequest(_Strict):
    """An Open Inference Protocol inference request: one input, `images` or `pixels`."""

    id: str | None = Field(None, description="echoed in the answer")
    model_name: str | None = Field(None, description="ignored: the path names the model (KServe's SDK sends it)")
    parameters: dict[str, Any] | None = Field(None, description="`binary_data_output`: every output in binary data")
    inputs: list[RequestInput] = Field(min_length=1, max_length=1)
    outputs: list[RequestOutput] | None = Field(None, description=f"at most `{PROBABILITIES}`, once")


class ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: Literal["FP32", "BYTES"]
    parameters: dict[str, Any] | None = None
    data: list[float] | list[str] | None = Field(None, description="absent when the output is in binary data")


class InferenceResponse(BaseModel):
    """An Open Inference Protocol inference answer."""

    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[ResponseOutput]


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int] = Field(description="-1: any size")


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata] = Field(description="a request carries exactly one of them")
    outputs: list[TensorMetadata]


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class Liveness(BaseModel):
    live: bool


class Readiness(BaseModel):
    ready: bool


class ModelReadiness(BaseModel):
    name: str
    ready: bool


class OipError(BaseModel):
    """An error answer on the Open Inference Protocol's routes: its `error`, with our code and request id."""

    error: str = Field(description="what went wrong, for humans")
    code: str = Field(description="stable UPPER_SNAKE machine-readable code, as on every other route")
    request_id: str | None = Field(None, description="the request's X-Request-ID")
    retry_after: int | None = Field(None, description="seconds to wait before retrying (shed requests only)")


@dataclass(frozen=True)
class InferLimits:
    """What one inference request may carry: images (either input), bytes per encoded image, pixels' shape."""

    max_images: int
    max_file_bytes: int
    image_shape: tuple[int, int, int]


@dataclass(frozen=True)
class InferRequest:
    """A parsed inference request: its images as files, or as a preprocessed float32 batch."""

    id: str | None
    images: list[bytes] | None = None
    pixels: np.ndarray | None = None
    classification: int | None = None  # the top k as BYTES, if asked
    binary_output: bool = False

    @property
    def count(self) -> int:
        """How many images it carries."""
        return len(self.images) if self.images is not None else len(self.pixels if self.pixels is not None else ())


def server_metadata(version: str) -> dict[str, Any]:
    """The server's metadata; `version`: the package's."""
    return ServerMetadata(name=SERVER_NAME, version=version, extensions=EXTENSIONS).model_dump()


def model_metadata(name: str, version: str, spec: ModelSpec) -> dict[str, Any]:
    size = spec.input_size
    return ModelMetadata(
        name=name,
        versions=[version],
        platform=PLATFORM,
        inputs=[
            TensorMetadata(name=IMAGES, datatype="BYTES", shape=[-1]),
            TensorMetadata(name=PIXELS, datatype="FP32", shape=[-1, 3, size, size]),
        ],
        outputs=[TensorMetadata(name=PROBABILITIES, datatype="FP32", shape=[-1, spec.num_classes])],
    ).model_dump()


def inflate(body: bytes, encoding: str, limit: int) -> bytes:
    """A request body as sent with Content-Encoding `encoding` (gzip, deflate or none), inflated to at
    most `limit` bytes: a small body that would inflate past it is refused without inflating it all."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "deflate"):
        raise UnsupportedMediaType(f"Content-Encoding {encoding[:_SHOWN]!r}: send gzip, deflate or none")
    inflater = zlib.decompressobj(31 if encoding == "gzip" else 15)  # HTTP's deflate is zlib-wrapped
    try:
        inflated = inflater.decompress(body, limit + 1)
    except zlib.error as e:
        raise ValidationFailed(f"the body is not valid {encoding} ({e})") from None
    if len(inflated) > limit:
        raise PayloadTooLarge(f"the request body inflates to over the limit of {limit:,} bytes")
    if not inflater.eof:
        raise ValidationFailed(f"the {encoding} body ends early")
    return inflated


def parse_infer(content_type: str, header_length: str | None, body: bytes, limits: InferLimits) -> InferRequest:
    """An inference request's body (JSON, or JSON then binary tensors) -> InferRequest, within `limits`."""
    header, binary = _split(content_type, header_length, body)
    try:
        request = InferenceRequest.model_validate_json(header)
    except ValidationError as e:
        error = e.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        raise ValidationFailed(f"{error['msg']}{f' at {where}' if where else ''}") from None
    tensor = request.inputs[0]
    size = (tensor.parameters or {}).get("binary_data_size")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size != len(binary)):
        raise ValidationFailed(f"binary_data_size is {size!r}; {len(binary):,} bytes of binary data follow the JSON")
    if size is None and binary:
        raise ValidationFailed("binary data follows the JSON, but no input declares binary_data_size")
    if size is None and tensor.data is None:
        raise ValidationFailed(f"input {tensor.name[:_SHOWN]!r} has neither data nor binary_data_size")
    classification, binary_output = _outputs(request)
    raw = binary if size is not None else None
    if tensor.name == IMAGES:
        images = _images(tensor, raw, limits)
        return InferRequest(request.id, images=images, classification=classification, binary_output=binary_output)
    if tensor.name == PIXELS:
        pixels = _pixels(tensor, raw, limits)
        return InferRequest(request.id, pixels=pixels, classification=classification, binary_output=binary_output)
    raise ValidationFailed(f"unknown input {tensor.name[:_SHOWN]!r}: send {IMAGES!r} (BYTES) or {PIXELS!r} (FP32)")


def encode_infer(
    request: InferRequest, probabilities: np.ndarray, name: str, version: str, classes: tuple[str, ...] | list[str]
) -> tuple[bytes, dict[str, str]]:
    """The answer to `request`: (body, headers), JSON, or JSON then binary data as the request asked."""
    n = len(probabilities)
    if request.classification is None:
        values: np.ndarray | list[bytes] = np.asarray(probabilities, dtype="<f4")
        output: dict[str, Any] = {"name": PROBABILITIES, "datatype": "FP32", "shape": [n, len(classes)]}
    else:
        k = min(request.classification, len(classes))  # asked for more than there are: all of them
        top = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
        values = [f"{probabilities[i, j]:f}:{j}:{classes[j]}".encode() for i in range(n) for j in top[i]]
        output = {"name": PROBABILITIES, "datatype": "BYTES", "shape": [n, k]}
    answer: dict[str, Any] = {"model_name": name, "model_version": version, "outputs": [output]}
    if request.id is not None:
        answer["id"] = request.id
    if not request.binary_output:
        output["data"] = values.ravel().tolist() if isinstance(values, np.ndarray) else [v.decode() for v in values]
        return json.dumps(answer).encode(), {"content-type": "application/json"}
    raw = values.tobytes() if isinstance(values, np.ndarray) else b"".join(_LENGTH.pack(len(v)) + v for v in values)
    output["parameters"] = {"binary_data_size": len(raw)}
    header = json.dumps(answer).encode()
    return header + raw, {"content-type": "application/octet-stream", HEADER_LENGTH: str(len(header))}


def _split(content_type: str, header_length: str | None, body: bytes) -> tuple[bytes, bytes]:
    """(JSON header, binary data) of a body."""
    if header_length is None:
        if content_type.startswith("application/octet-stream"):
            raise ValidationFailed(f"binary data needs the JSON's length in {HEADER_LENGTH.title()}")
        if content_type and not content_type.startswith("application/json"):  # tritonclient sends none
            raise UnsupportedMediaType(
                "send the inference request as application/json, or as application/octet-stream: the JSON, "
                f"then the binary data, with the JSON's length in {HEADER_LENGTH.title()}"
            )
        return body, b""
    if not header_length.isdigit() or int(header_length) > len(body):
        raise ValidationFailed(
            f"{HEADER_LENGTH.title()} is {header_length[:_SHOWN]!r}; the body is {len(body):,} bytes"
        )
    return body[: int(header_length)], body[int(header_length) :]


def _outputs(request: InferenceRequest) -> tuple[int | None, bool]:
    """(classification k or None, whether to answer in binary data) from the requested outputs."""
    binary = _flag((request.parameters or {}).get("binary_data_output", False), "binary_data_output")
    outputs = request.outputs or []
    if len(outputs) > 1 or any(o.name != PROBABILITIES for o in outputs):
        names = ", ".join(repr(o.name[:_SHOWN]) for o in outputs)
        raise ValidationFailed(f"unknown or repeated outputs {names}: this model answers {PROBABILITIES!r} only")
    if not outputs:
        return None, binary
    parameters = outputs[0].parameters or {}
    k = parameters.get("classification")
    if k is not None and (not isinstance(k, int) or isinstance(k, bool) or k < 1):
        raise ValidationFailed(f"classification must be a positive integer, not {str(k)[:_SHOWN]!r}")
    return k, _flag(parameters.get("binary_data", binary), "binary_data")


def _flag(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise ValidationFailed(f"{name} must be true or false, not {str(value)[:_SHOWN]!r}")
    return value


def _count(tensor: RequestInput, datatype: str, rank: int, limits: InferLimits) -> int:
    """N of a tensor of `datatype` and `rank` dimensions, within limits."""
    if tensor.datatype != datatype:
        raise ValidationFailed(f"input {tensor.name!r} is {datatype}, not {tensor.datatype[:_SHOWN]!r}")
    if len(tensor.shape) != rank or tensor.shape[0] < 1:
        raise ValidationFailed(f"input {tensor.name!r} has shape {tensor.shape[:8]}; expected {rank} dimensions, N ≥ 1")
    if tensor.shape[0] > limits.max_images:
        raise TooManyImages(f"{tensor.shape[0]} images; the limit is {limits.max_images}")
    return tensor.shape[0]


def _images(tensor: RequestInput, binary: bytes | None, limits: InferLimits) -> list[bytes]:
    n = _count(tensor, "BYTES", 1, limits)
    if binary is not None:
        files = _unpack(binary)
    else:
        encoded = tensor.data or []
        if not all(isinstance(item, str) for item in encoded):
            raise ValidationFailed(f"input {IMAGES!r} takes base64 strings in JSON (or raw bytes in binary data)")
        if len(encoded) != n:  # counted before anything is decoded
            raise ValidationFailed(f"input {IMAGES!r} has shape [{n}] but {len(encoded)} elements")
        files = [decode_base64(text, f"images[{i}]", limits.max_file_bytes) for i, text in enumerate(encoded)]
    if len(files) != n:
        raise ValidationFailed(f"input {IMAGES!r} has shape [{n}] but {len(files)} elements")
    for i, data in enumerate(files):
        if len(data) > limits.max_file_bytes:
            raise PayloadTooLarge(f"images[{i}] is {len(data):,} bytes; the limit is {limits.max_file_bytes:,}")
    return files


def _unpack(binary: bytes) -> list[bytes]:
    """BYTES elements of binary data: each a little-endian uint32 length, then that many bytes."""
    files: list[bytes] = []
    at = 0
    while at < len(binary):
        if at + _LENGTH.size > len(binary):
            raise ValidationFailed("binary data ends inside an element's length")
        (size,) = _LENGTH.unpack_from(binary, at)
        at += _LENGTH.size
        if at + size > len(binary):
            raise ValidationFailed(f"binary data ends inside element {len(files)} ({size:,} bytes declared)")
        files.append(binary[at : at + size])
        at += size
    return files


def _pixels(tensor: RequestInput, binary: bytes | None, limits: InferLimits) -> np.ndarray:
    n = _count(tensor, "FP32", 4, limits)
    shape = (n, *limits.image_shape)
    if tuple(tensor.shape) != shape:
        raise ValidationFailed(
            f"input {PIXELS!r} has shape {tensor.shape}; expected [N, {', '.join(map(str, shape[1:]))}]"
        )
    if binary is not None:
        if len(binary) != math.prod(shape) * 4:
            raise ValidationFailed(
                f"input {PIXELS!r} of shape {list(shape)} takes {math.prod(shape) * 4:,} bytes, not {len(binary):,}"
            )
        pixels = np.frombuffer(binary, dtype="<f4").reshape(shape)
    else:
        try:
            values = np.asarray(tensor.data)
        except ValueError:
            raise ValidationFailed(f"input {PIXELS!r}'s data is ragged") from None
        if values.dtype.kind not in "iuf":
            raise ValidationFailed(f"input {PIXELS!r} takes numbers, not {values.dtype.kind!r}-kind data")
        if values.size != math.prod(shape):
            raise ValidationFailed(f"input {PIXELS!r} has shape {list(shape)} but {values.size:,} elements")
        pixels = values.astype(np.float32).reshape(shape)
    if not np.isfinite(pixels).all():
        raise ValidationFailed(f"input {PIXELS!r} holds NaN or infinite values")
    return np.array(pixels, dtype=np.float32, order="C")
