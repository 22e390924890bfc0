"""Examples of each body the API takes and each answer it gives, for the OpenAPI document: what the
service answers with the shipped default for one image (a 32 x 32 PNG of one colour)."""

from __future__ import annotations

from typing import Any

from .. import __version__
from ..spec import CIFAR10_CLASSES

EXAMPLE_PNG = (  # a 32 x 32 PNG of one colour, steel blue (100 bytes)
    "iVBORw0KGgoAAAANSUhEUgAAACAAAAAgCAIAAAD8GO2jAAAAK0lEQVR42u3NQQEAQAQAMC6cYDIJeCX4bQWW1ROXXhwTCAQCgUAgEAgEWz6NVwG8BEt0uAAAAABJRU5ErkJggg=="
)
EXAMPLE_TAG = "pyramidnet-cifar10:7afb2e792399721b"
EXAMPLE_PROBABILITIES = [0.6719, 0.0095, 0.2939, 0.0032, 0.0036, 0.0028, 0.003, 0.0036, 0.005, 0.0036]
EXAMPLE_PREDICTION = {
    "label": "airplane",
    "class_id": 0,
    "confidence": 0.6719,
    "probabilities": dict(zip(CIFAR10_CLASSES, EXAMPLE_PROBABILITIES, strict=True)),
    "model": EXAMPLE_TAG,
}
EXAMPLE_ID = "5f0c2f8e9a3b4c1d8e7f6a5b4c3d2e1f"
EXAMPLE_INFER = {
    "inputs": [{"name": "images", "shape": [1], "datatype": "BYTES", "data": [EXAMPLE_PNG]}],
    "outputs": [{"name": "probabilities", "parameters": {"classification": 2}}],
}
EXAMPLES: dict[str, Any] = {
    "Prediction": EXAMPLE_PREDICTION,
    "Predictions": {"predictions": [EXAMPLE_PREDICTION]},
    "ImagesRequest": {"images": [EXAMPLE_PNG]},
    "InstancesRequest": {"instances": [{"b64": EXAMPLE_PNG}]},
    "ErrorResponse": {
        "error": {"code": "INVALID_IMAGE", "message": "images[1]: not an image in a recognised format"},
        "request_id": EXAMPLE_ID,
    },
    "ModelInfo": {
        "tag": EXAMPLE_TAG,
        "trained": True,
        "warning": None,
        "weights": "embedded:pyramidnet110-cifar10.safetensors",
        "claimed_accuracy": 92.9,
        "measured_accuracy": {"top1": 92.77, "images": 10000, "on": "the CIFAR-10 test JPEGs (fp32)"},
        "classes": list(CIFAR10_CLASSES),
        "input_size": 32,
        "preprocessing": {
            "mean": [0.4914, 0.4822, 0.4465],
            "std": [0.2023, 0.1994, 0.201],
            "resize": "center_crop",
            "interpolation": "bicubic",
        },
        "epoch": 120,
        "parameters": 1772706,
        "source_sha256": "7afb2e792399721b5bc155a15b5fec82a1720582879a6c074b86064af3833f97",
        "device": "cpu",
        "backend": "openvino",
        "precision": "bf16",
        "precision_reason": "this CPU computes bf16 natively, and its int8 model is not shown within 0.1 pp of fp32",
        "batching": {"max_batch_size": 16, "max_latency_ms": 10000, "max_wait_s": 2.0},
        "limits": {
            "max_request_bytes": 33554432,
            "max_file_bytes": 8388608,
            "max_image_pixels": 25000000,
            "max_images_per_request": 64,
            "allowed_formats": ["BMP", "GIF", "JPEG", "PNG", "TIFF", "WEBP"],
            "multi_frame": "first_frame",
            "url_inputs": False,
            "timeout_s": 60.0,
            "auth_required": False,
        },
    },
    "InferenceRequest": EXAMPLE_INFER,
    "InferenceResponse": {
        "model_name": "pyramidnet-cifar10",
        "model_version": "7afb2e792399721b",
        "outputs": [
            {
                "name": "probabilities",
                "datatype": "BYTES",
                "shape": [1, 2],
                "data": ["0.671873:0:airplane", "0.293910:2:bird"],
            }
        ],
    },
    "ServerMetadata": {
        "name": "pyramidnet-bento",
        "version": __version__,
        "extensions": ["classification", "binary_tensor_data"],
    },
    "ModelMetadata": {
        "name": "pyramidnet-cifar10",
        "versions": ["7afb2e792399721b"],
        "platform": "bentoml",
        "inputs": [
            {"name": "images", "datatype": "BYTES", "shape": [-1]},
            {"name": "pixels", "datatype": "FP32", "shape": [-1, 3, 32, 32]},
        ],
        "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]}],
    },
    "Liveness": {"live": True},
    "Readiness": {"ready": True},
    "ModelReadiness": {"name": "pyramidnet-cifar10", "ready": True},
    "OipError": {
        "error": "no model 'resnet50' here; this server serves 'pyramidnet-cifar10', version '7afb2e792399721b'",
        "code": "MODEL_NOT_FOUND",
        "request_id": EXAMPLE_ID,
    },
}
