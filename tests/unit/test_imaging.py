"""Decoding and preprocessing: every pixel format to RGB, EXIF, resize policy, exact training parity."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from model_store import ImageTooLarge, InvalidImage, ModelSpec, decode_image, preprocess, preprocess_batch
from model_store.imaging import to_rgb

SPEC = ModelSpec()


def encode(image: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def to_tensor_normalize(image: Image.Image) -> torch.Tensor:
    """torchvision's `Compose([ToTensor(), Normalize(mean, std)])` on an RGB image, op for op, in torch:
    HWC uint8 to CHW float32 divided by 255, then `sub_(mean).div_(std)` per channel."""
    tensor = torch.from_numpy(np.array(image)).permute(2, 0, 1).contiguous().to(torch.float32).div(255)
    mean = torch.as_tensor(SPEC.mean, dtype=torch.float32).view(-1, 1, 1)
    std = torch.as_tensor(SPEC.std, dtype=torch.float32).view(-1, 1, 1)
    return tensor.sub_(mean).div_(std)


def test_32x32_input_equals_training_totensor_normalize_exactly(exact_images):
    images, _ = exact_images
    expected = torch.stack([to_tensor_normalize(Image.fromarray(img)) for img in images]).numpy()
    ours = preprocess_batch([Image.fromarray(img) for img in images], SPEC)
    assert ours.dtype == np.float32
    assert ours.shape == (1017, 3, 32, 32)
    assert np.array_equal(ours, expected)


def test_single_and_batched_forms_agree(exact_images):
    images = [Image.fromarray(img) for img in exact_images[0][:5]]
    assert np.array_equal(np.stack([preprocess(im, SPEC) for im in images]), preprocess_batch(images, SPEC))


@pytest.mark.parametrize(
    ("mode", "value", "rgb"),
    [
        ("L", 128, (128, 128, 128)),
        ("1", 1, (255, 255, 255)),
        ("LA", (64, 255), (64, 64, 64)),
        ("LA", (64, 0), (255, 255, 255)),  # fully transparent -> white background
        ("RGBA", (10, 20, 30, 255), (10, 20, 30)),
        ("RGBA", (10, 20, 30, 0), (255, 255, 255)),
        ("CMYK", (0, 255, 255, 0), (255, 0, 0)),
        ("I;16", 65535, (255, 255, 255)),
        ("I;16", 32896, (128, 128, 128)),
        ("I", 257 * 7, (7, 7, 7)),
    ],
)
def test_pixel_modes_become_rgb(mode, value, rgb):
    out = to_rgb(Image.new(mode, (4, 4), value))
    assert out.mode == "RGB"
    assert out.getpixel((1, 1)) == rgb


def test_palette_with_and_without_transparency():
    palette = Image.new("P", (4, 4), 1)
    palette.putpalette([0, 0, 0, 200, 100, 50] + [0] * 762)
    assert to_rgb(palette).getpixel((0, 0)) == (200, 100, 50)
    palette.info["transparency"] = 1
    assert to_rgb(palette).getpixel((0, 0)) == (255, 255, 255)


def test_sixteen_bit_png_roundtrip_through_decode():
    data = encode(Image.new("I;16", (8, 8), 65535))
    assert to_rgb(decode_image(data, max_pixels=10_000)).getpixel((0, 0)) == (255, 255, 255)


def test_exif_orientation_is_applied():
    # 20 wide x 10 high, left half red; EXIF 6 says "rotate 90 degrees clockwise to view".
    image = Image.new("RGB", (20, 10), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 10, 10))
    exif = Image.Exif()
    exif[0x0112] = 6
    decoded = decode_image(encode(image, "JPEG", exif=exif, quality=100), max_pixels=10_000)
    upright = to_rgb(decoded)
    assert upright.size == (10, 20)
    r, _, b = upright.getpixel((5, 2))
    assert r > 200
    assert b < 50


def test_larger_and_non_square_images_follow_the_resize_policy():
    wide = Image.new("RGB", (128, 64), (0, 0, 0))
    wide.paste((255, 255, 255), (32, 0, 96, 64))  # white centre square, black side bars
    cropped = preprocess(wide, SPEC)
    stretched = preprocess(wide, SPEC.model_copy(update={"resize": "stretch"}))
    assert cropped.shape == stretched.shape == (3, 32, 32)
    white = (1 - np.array(SPEC.mean)) / np.array(SPEC.std)
    assert np.allclose(cropped[:, 2:30, 2:30], white[:, None, None], atol=1e-3)  # centre crop: the white square
    assert stretched[0, 0, 0] < 0  # stretch keeps the black bars


def test_garbage_and_truncated_files_are_invalid_images(exact_images):
    png = encode(Image.fromarray(exact_images[0][0]))
    for data in (b"", b"hello", png[:40], b"\x89PNG\r\n\x1a\n" + b"\x00" * 100):
        with pytest.raises(InvalidImage):
            decode_image(data, max_pixels=10_000)


def claiming(side: int) -> bytes:
    """A PNG whose header claims side x side pixels over the pixel data of one: what a small upload can
    claim (a one-colour 20000x20000 PNG is a few hundred KB, and decoding it would take 1.2 GB)."""
    data = bytearray(encode(Image.new("L", (1, 1))))  # signature, then IHDR: length, type, 13 bytes, CRC
    data[16:24] = struct.pack(">II", side, side)
    data[29:33] = struct.pack(">I", zlib.crc32(data[12:29]))
    return bytes(data)


@pytest.mark.parametrize("side", [8_000, 20_000])
def test_pixel_limit_is_checked_before_decoding(side):
    assert Image.open(io.BytesIO(claiming(100))).size == (100, 100)  # the header is read as written
    # Decoding first would fail on the missing pixels (InvalidImage): the limit comes before it.
    with pytest.raises(ImageTooLarge, match=r"limit (is|of) 25,000,000"):
        decode_image(claiming(side), max_pixels=25_000_000)
