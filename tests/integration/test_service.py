"""The served behaviour, against the shared `bentoml serve` on real CIFAR-10 test images."""

from __future__ import annotations

import io
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import bentoml
import httpx
import numpy as np
import pytest
from PIL import Image

from model_store import CIFAR10_CLASSES, preprocess_batch
from model_store.inference import MAX_INT8_DROP_PP
from model_store.openvino_ir import Int8Accuracy, native_bf16
from model_store.registry import SHIPPED_WEIGHTS

from ..parity import PARITY, offline_probabilities, served_probabilities
from ..servers import Server


def batch_histogram(server: Server) -> dict[float, float]:
    """Cumulative counts of the images in the runner's forward passes, from /metrics: {le: count}."""
    pattern = r'pyramidnet_batch_images_bucket\{le="([^"]+)"[^}]*\} (\S+)'
    return {float(le): float(n) for le, n in re.findall(pattern, server.metrics())}


def test_ready_only_after_the_model_is_loaded_and_warm(server, offline):
    assert "warmed up" in server.log_when_ready
    assert f"serving {offline.tag}" in server.log_when_ready  # which model, said at start-up
    assert f"weights from embedded:{SHIPPED_WEIGHTS.name}" in server.log_when_ready  # and where it came from
    assert "nothing backs" not in server.log_when_ready
    assert "meaningless" not in server.log_when_ready


def test_readiness_and_liveness(server):
    for probe in ("/readyz", "/livez", "/healthz"):
        assert httpx.get(server.url + probe).status_code == 200


def test_model_info_says_what_is_served(client, offline, default_model):
    info, meta = client.model_info(), default_model.info.metadata
    assert info["tag"] == offline.tag
    assert info["trained"] is True
    assert info["warning"] is None
    assert info["weights"] == f"embedded:{SHIPPED_WEIGHTS.name}"
    assert info["epoch"] == int(meta["epochs"])
    assert info["measured_accuracy"] == {"top1": meta["measured_top1"], "images": 10_000, "on": meta["measured_on"]}
    assert info["classes"] == list(CIFAR10_CLASSES)
    assert info["input_size"] == 32
    assert info["parameters"] == 1_772_706
    assert info["preprocessing"]["mean"] == [0.4914, 0.4822, 0.4465]
    assert (info["device"], info["backend"], info["precision"]) == ("cpu", "openvino", offline.precision)
    assert info["precision_reason"] == offline.precision_reason  # the rule's, as the log says it
    measured = Int8Accuracy.stored(default_model.path)  # the rule: int8 measured within the bound, else bf16 if native
    within = measured is not None and measured.drop_pp_upper <= MAX_INT8_DROP_PP
    assert offline.precision == ("int8" if within else "bf16" if native_bf16() else "fp32")
    assert info["batching"] == {"max_batch_size": 16, "max_latency_ms": 20000, "max_wait_s": 60.0}
    assert info["limits"]["max_images_per_request"] == 64
    assert info["limits"]["url_inputs"] is False
    assert info["limits"]["allowed_formats"] == ["BMP", "GIF", "JPEG", "PNG", "TIFF", "WEBP"]


def test_classify_matches_the_offline_model(client, offline, sample_jpegs):
    paths = sample_jpegs[:20]
    results = [client.classify(image=p) for p in paths]
    for r in results:
        assert set(r) == {"label", "class_id", "confidence", "probabilities", "model"}
        assert r["model"] == offline.tag
        assert r["label"] == CIFAR10_CLASSES[r["class_id"]]
        assert r["confidence"] == max(r["probabilities"].values())
    served = served_probabilities(results)
    assert np.abs(served - offline_probabilities(offline, paths)).max() < PARITY
    assert np.allclose(served.sum(1), 1, atol=1e-5)


def test_classify_batch_matches_offline_same_order(client, offline, sample_jpegs):
    paths = sample_jpegs[:64]
    results = client.classify_batch(images=paths)
    assert len(results) == len(paths)
    assert np.abs(served_probabilities(results) - offline_probabilities(offline, paths)).max() < PARITY
    # N in, N out, same order: reversing the request reverses the answer.
    reversed_results = client.classify_batch(images=paths[::-1][:10])
    assert [r["probabilities"] for r in reversed_results] == [r["probabilities"] for r in results[::-1][:10]]


def test_concurrent_classify_is_batched_and_exact(server, offline, sample_jpegs):
    paths = sample_jpegs[:80] * 2
    local = threading.local()  # a SyncHTTPClient tracks its open files: one per thread

    def classify(path: Path) -> dict:
        if not hasattr(local, "client"):
            local.client = bentoml.SyncHTTPClient(server.url, timeout=120)
        return local.client.classify(image=path)

    before = batch_histogram(server)
    with ThreadPoolExecutor(max_workers=64) as pool:
        results = list(pool.map(classify, paths))
    after = batch_histogram(server)

    assert np.abs(served_probabilities(results) - offline_probabilities(offline, paths)).max() < PARITY
    total = after[float("inf")] - before.get(float("inf"), 0)
    single = after[1.0] - before.get(1.0, 0)
    assert total > 0, "no forward pass counted"
    assert single < total, f"no forward pass of more than one image among {total:.0f}"


def probe(server: Server, path: str) -> httpx.Response | None:
    """The probe's answer, or None while the starting server holds the connection unanswered."""
    try:
        return httpx.get(server.url + path, timeout=5)
    except httpx.HTTPError:
        return None


def test_served_top1_on_the_exact_images_is_the_shipped_measurement(client, default_model, exact_images):
    from model_store.client import uploadable

    images, labels = exact_images
    results = [
        r
        for i in range(0, len(images), 64)
        for r in client.classify_batch(images=[uploadable(Image.fromarray(p)) for p in images[i : i + 64]])
    ]
    top1 = float((np.array([r["class_id"] for r in results]) == labels).mean() * 100)
    # Measured in fp32 when the weights shipped; the default precision may be bf16 (a handful of
    # the 1,017 answers may flip), so within 0.3 pp: three images.
    assert abs(top1 - float(default_model.info.metadata["test_top1_exact"])) <= 0.3


def test_python_client_accepts_pil_images_opened_from_files(client, offline, sample_jpegs):
    with Image.open(sample_jpegs[0]) as image:
        result = client.classify(image=image)
    expected = offline_probabilities(offline, sample_jpegs[:1])[0]
    assert np.abs(served_probabilities([result])[0] - expected).max() < PARITY


def test_python_client_sends_images_held_in_memory(client, offline, exact_images):
    from model_store.client import uploadable

    pixels = exact_images[0][:6]
    in_memory = [Image.fromarray(p) for p in pixels]
    with pytest.raises(AttributeError, match="fp"):  # the generated client alone (BentoML 1.4)
        client.classify(image=in_memory[0])
    results = [
        client.classify(image=uploadable(in_memory[0])),
        *client.classify_batch(images=[uploadable(p) for p in pixels[1:4]]),
        client.classify(image=uploadable(in_memory[4].convert("CMYK"))),  # RGB to CMYK and back is exact
        client.classify(image=uploadable(encode(in_memory[5]))),
    ]
    expected = offline.predict_proba(preprocess_batch(in_memory, offline.spec))
    assert np.abs(served_probabilities(results) - expected).max() < PARITY  # PNG is lossless: the same pixels


def encode(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def test_wrong_declared_content_type_is_judged_by_the_bytes(server, sample_jpegs):
    response = httpx.post(
        server.url + "/classify", files={"image": ("cat.txt", sample_jpegs[0].read_bytes(), "text/plain")}
    )
    assert response.status_code == 200
    assert response.json()["label"] in CIFAR10_CLASSES


def test_client_errors_surface_as_bentoml_exceptions(client, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(bentoml.exceptions.BentoMLException) as err:
        client.classify(image=bad)
    assert "INVALID_IMAGE" in str(err.value)
