"""Bad and odd inputs against the shared server: each gets its documented answer, and fuzzing finds no 5xx."""

from __future__ import annotations

import base64
import io
import re
import subprocess
import sys
from pathlib import Path

import httpx
import hypothesis
import numpy as np
import pytest
from hypothesis import strategies as st
from PIL import Image

from model_store import CIFAR10_CLASSES, Classifier, preprocess_batch
from model_store.errors import ALL_ERRORS

from ..servers import REPO


def encode(image: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kwargs)
    return buf.getvalue()


def animated_gif() -> bytes:
    frames = [Image.new("RGB", (32, 32), color) for color in ((200, 30, 30), (30, 200, 30), (30, 30, 200))]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def sixteen_bit_png() -> bytes:
    return encode(Image.fromarray(np.linspace(0, 65535, 32 * 32, dtype=np.uint16).reshape(32, 32)))


def palette_png() -> bytes:
    return encode(Image.new("RGB", (40, 30), (10, 120, 200)).convert("P", palette=Image.Palette.ADAPTIVE))


def cmyk_jpeg() -> bytes:
    return encode(Image.new("CMYK", (32, 32), (0, 128, 255, 0)), "JPEG")


def bomb_png() -> bytes:
    """12000 x 12000 pixels (144 M) in a few hundred kilobytes."""
    return encode(Image.new("L", (12_000, 12_000)), optimize=True)


SVG = (
    b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="32" height="32">'
    b'<rect width="32" height="32"/></svg>'
)


def one(name: str, data: bytes, ctype: str = "image/png") -> dict:
    return {"files": {"image": (name, data, ctype)}}


def many(*parts: tuple[str, bytes]) -> dict:
    return {"files": [("images", (name, data, "image/png")) for name, data in parts]}


def corpus(jpeg: bytes) -> dict[str, tuple[str, dict, int, str | None]]:
    """name -> (route, request kwargs, expected status, expected error code or None for a 200)."""
    png = encode(Image.new("RGB", (32, 32), (90, 90, 90)))
    return {
        "empty-file": ("/classify", one("a.png", b""), 400, "INVALID_IMAGE"),
        "random-bytes": ("/classify", one("a.png", np.random.default_rng(0).bytes(4096)), 400, "INVALID_IMAGE"),
        "text": ("/classify", one("a.txt", b"just some text\n", "text/plain"), 400, "INVALID_IMAGE"),
        "truncated-png": ("/classify", one("a.png", png[: len(png) // 2]), 400, "INVALID_IMAGE"),
        "truncated-jpeg": ("/classify", one("a.jpg", jpeg[: len(jpeg) // 2], "image/jpeg"), 400, "INVALID_IMAGE"),
        "png-declared-as-jpeg": ("/classify", one("a.jpg", png, "image/jpeg"), 200, None),
        "jpeg-declared-as-text": ("/classify", one("a.txt", jpeg, "text/plain"), 200, None),
        "svg": ("/classify", one("a.svg", SVG, "image/svg+xml"), 415, "UNSUPPORTED_MEDIA_TYPE"),
        "format-not-allowed-ppm": (
            "/classify",
            one("a.ppm", encode(Image.new("RGB", (32, 32)), "PPM")),
            415,
            "UNSUPPORTED_MEDIA_TYPE",
        ),
        "decompression-bomb": ("/classify", one("bomb.png", bomb_png()), 413, "IMAGE_TOO_LARGE"),
        "sixteen-bit-png": ("/classify", one("a.png", sixteen_bit_png()), 200, None),
        "palette-png": ("/classify", one("a.png", palette_png()), 200, None),
        "cmyk-jpeg": ("/classify", one("a.jpg", cmyk_jpeg(), "image/jpeg"), 200, None),
        "animated-gif": ("/classify", one("a.gif", animated_gif(), "image/gif"), 200, None),
        "file-over-byte-limit": (
            "/classify",
            one("big.png", b"\x89PNG" + bytes(9 * 1024 * 1024)),
            413,
            "PAYLOAD_TOO_LARGE",
        ),
        "request-over-byte-limit": (
            "/classify_batch",
            many(*[(f"{i}.png", bytes(7 * 1024 * 1024)) for i in range(5)]),
            413,
            "PAYLOAD_TOO_LARGE",
        ),
        "too-many-images": ("/classify_batch", many(*[("a.png", png)] * 65), 413, "TOO_MANY_IMAGES"),
        "batch-with-one-bad": ("/classify_batch", many(("a.png", png), ("b.png", b"nope")), 400, "INVALID_IMAGE"),
        "missing-field": ("/classify", {"files": {"other": ("a.png", png, "image/png")}}, 400, "VALIDATION_ERROR"),
        "empty-multipart": (
            "/classify",
            {"headers": {"content-type": "multipart/form-data; boundary=x"}, "content": b"--x--\r\n"},
            400,
            "VALIDATION_ERROR",
        ),
        "wrong-field-name": (
            "/classify_batch",
            {"files": {"image": ("a.png", png, "image/png")}},
            400,
            "VALIDATION_ERROR",
        ),
        "url-instead-of-file": (
            "/classify",
            {"data": {"image": "http://127.0.0.1:9/cat.png"}, "files": {"x": ("", b"", "")}},
            400,
            "VALIDATION_ERROR",
        ),
        "multipart-without-boundary": (
            "/classify",
            {"headers": {"content-type": "multipart/form-data"}, "content": b"xx"},
            400,
            "VALIDATION_ERROR",
        ),
        "json-body": ("/classify", {"json": {"image": "http://127.0.0.1:9/cat.png"}}, 415, "UNSUPPORTED_MEDIA_TYPE"),
        "raw-body-to-classify": ("/classify", {"content": jpeg, "headers": {"content-type": "image/jpeg"}}, 200, None),
        "raw-body-not-an-image": (
            "/classify",
            {"content": b"GIF89a-truncated", "headers": {"content-type": "image/gif"}},
            400,
            "INVALID_IMAGE",
        ),
        "raw-svg-body": (
            "/classify",
            {"content": SVG, "headers": {"content-type": "image/svg+xml"}},
            415,
            "UNSUPPORTED_MEDIA_TYPE",
        ),
        "raw-body-to-classify-batch": (
            "/classify_batch",
            {"content": jpeg, "headers": {"content-type": "image/jpeg"}},
            415,
            "UNSUPPORTED_MEDIA_TYPE",
        ),
        "text-body": (
            "/classify",
            {"content": b"cat", "headers": {"content-type": "text/plain"}},
            415,
            "UNSUPPORTED_MEDIA_TYPE",
        ),
        "filename-of-4000-characters": ("/classify", one("a" * 4000 + ".jpg", jpeg, "image/jpeg"), 200, None),
        "part-header-over-4-kib": ("/classify", one("a" * 5000 + ".jpg", jpeg, "image/jpeg"), 400, "VALIDATION_ERROR"),
        "5000-parts-to-classify": (
            "/classify",
            {"files": [("image", ("a.jpg", jpeg, "image/jpeg"))] * 5000},
            413,
            "TOO_MANY_IMAGES",
        ),
        "two-images-to-classify": (
            "/classify",
            {"files": [("image", ("a.jpg", jpeg, "image/jpeg"))] * 2},
            413,
            "TOO_MANY_IMAGES",
        ),
    }


@pytest.fixture(scope="module")
def cases(sample_jpegs) -> dict:
    return corpus(sample_jpegs[0].read_bytes())


CASE_NAMES = list(corpus(b"\xff\xd8placeholder").keys())


@pytest.mark.parametrize("name", CASE_NAMES)
def test_bad_and_odd_inputs_get_their_documented_answer(server, cases, name):
    route, kwargs, status, code = cases[name]
    log_before = server.log.stat().st_size
    response = httpx.post(server.url + route, timeout=60, **kwargs)
    assert response.status_code == status, response.text
    body = response.json()
    if code is None:
        assert body["label"] in CIFAR10_CLASSES
    else:
        assert body["error"]["code"] == code
        assert body["error"]["message"]
        assert body["request_id"] == response.headers["x-request-id"]
    assert server.is_ready()
    # Client errors are logged as one INFO line, without a traceback.
    with server.log.open("rb") as f:
        f.seek(log_before)
        new_log = f.read().decode(errors="replace")
    assert "Traceback" not in new_log
    assert "[ERROR]" not in new_log


def test_a_raw_image_body_is_answered_exactly_as_the_same_image_uploaded(server, sample_jpegs):
    """The same probabilities, bit for bit, and the same admission and request id, whatever the declared type."""
    for path, declared in zip(sample_jpegs[:12], ["image/jpeg", "image/png", "image/octet"] * 4, strict=True):
        data = path.read_bytes()
        raw = httpx.post(server.url + "/classify", content=data, headers={"content-type": declared}, timeout=60)
        uploaded = httpx.post(server.url + "/classify", **one(path.name, data, "image/jpeg"), timeout=60)
        assert raw.status_code == uploaded.status_code == 200, raw.text
        assert raw.json() == uploaded.json()
        assert raw.headers["x-request-id"] != uploaded.headers["x-request-id"]


def test_base64_json_is_answered_exactly_as_the_same_images_uploaded(server, sample_jpegs):
    """Both JSON shapes: the answers of /classify_batch for the same files, bit for bit, in order."""
    paths = sample_jpegs[:20]
    encoded = [base64.b64encode(p.read_bytes()).decode() for p in paths]
    files = [("images", (p.name, p.read_bytes(), "image/jpeg")) for p in paths]
    uploaded = httpx.post(server.url + "/classify_batch", files=files, timeout=120)
    assert uploaded.status_code == 200, uploaded.text
    for body in ({"images": encoded}, {"instances": [{"b64": e} for e in encoded]}):
        answered = httpx.post(server.url + "/classify_json", json=body, timeout=120)
        assert answered.status_code == 200, answered.text
        assert answered.json() == {"predictions": uploaded.json()}


def test_a_json_body_is_admitted_and_refused_like_a_multipart_one(server, sample_jpegs):
    too_many = {"images": [base64.b64encode(sample_jpegs[0].read_bytes()).decode()] * 65}
    refused = httpx.post(server.url + "/classify_json", json=too_many, timeout=60)
    assert (refused.status_code, refused.json()["error"]["code"]) == (413, "TOO_MANY_IMAGES")
    assert refused.json()["request_id"] == refused.headers["x-request-id"]
    broken = httpx.post(server.url + "/classify_json", json={"images": ["bm90IGFuIGltYWdl"]}, timeout=60)
    assert (broken.status_code, broken.json()["error"]["code"]) == (400, "INVALID_IMAGE")  # "not an image"


def test_animated_gif_is_classified_by_its_first_frame(server, offline: Classifier):
    served = httpx.post(server.url + "/classify", **one("a.gif", animated_gif(), "image/gif")).json()
    first = Image.new("RGB", (32, 32), (200, 30, 30))
    expected = offline.predict_proba(preprocess_batch([first], offline.spec))[0]
    got = np.array([served["probabilities"][c] for c in CIFAR10_CLASSES])
    assert np.abs(got - expected).max() < 1e-2  # GIF palette quantisation moves the colour slightly


def test_every_check_of_schemathesis_passes_on_every_route(server):
    """`st run --checks all`: no server error, every answer in its documented schema (a null where the
    document says null), every documented status, a 405 with `Allow`, schema-valid bodies accepted and
    invalid ones refused (schemathesis.toml says which statuses count, and why)."""
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "schemathesis"),
            "run",
            f"{server.url}/docs.json",
            "--checks",
            "all",
            "--max-examples",
            "60",
            "--seed",
            "7",
            "--no-color",
        ],
        cwd=REPO,  # its schemathesis.toml
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-4000:]
    summary = re.search(r"(\d+) generated, (\d+) passed", result.stdout)
    assert summary, result.stdout[-2000:]
    assert summary[1] == summary[2], result.stdout[-2000:]
    assert int(summary[1]) >= 100, result.stdout[-2000:]


# --- Multipart bodies of any shape -------------------------------------------------------------

SIZES = st.sampled_from([0, 1, 100, 4000, 5000, 70_000])


def multipart(field: str, filename: str, content_type: str, extra: str, parts: int, data: bytes) -> bytes:
    part = (
        (
            f'--b0und\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
            f"Content-Type: {content_type}\r\nX-Extra: {extra}\r\n\r\n"
        ).encode()
        + data
        + b"\r\n"
    )
    return part * parts + b"--b0und--\r\n"


@hypothesis.given(
    route=st.sampled_from(["/classify", "/classify_batch"]),
    field=SIZES,
    filename=SIZES,
    content_type=SIZES,
    extra=SIZES,
    parts=st.sampled_from([0, 1, 2, 65, 1500]),
)
@hypothesis.settings(max_examples=60, deadline=None, derandomize=True)
def test_a_multipart_body_of_any_shape_gets_a_coded_answer(
    server, cases, route, field, filename, content_type, extra, parts
):
    """Every header and field of a multipart body, at any size, and any number of parts: a result
    or a coded 4xx, never a 5xx (a long filename once made BentoML fail writing a temporary file)."""
    jpeg = cases["jpeg-declared-as-text"][1]["files"]["image"][1]
    name = "f" * field if field else {"/classify": "image", "/classify_batch": "images"}[route]
    body = multipart(name, "n" * filename, "image/" + "x" * content_type, "e" * extra, parts, jpeg)
    response = httpx.post(
        server.url + route, content=body, timeout=120, headers={"content-type": "multipart/form-data; boundary=b0und"}
    )
    assert response.status_code < 500, response.text[:500]
    if response.status_code != 200:
        assert response.json()["error"]["code"] in {e.code for e in ALL_ERRORS}, response.text[:500]
