"""Decode and preprocess: bytes -> PIL image -> normalised float32 CHW, one implementation for
the service and for offline evaluation."""

from __future__ import annotations

import io
import warnings
from collections.abc import Collection, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ApiError, ImageTooLarge, InvalidImage, UnsupportedMediaType
from .spec import ModelSpec

_RESAMPLING = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}
# decode_image enforces its own pixel limit; PIL's warning over ~89 Mpx would only repeat it.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
_SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I"}
# Transparent pixels become white: the usual rendering of a transparent image for a viewer.
_BACKGROUND = (255, 255, 255)


def decode_image(source: bytes | Path, *, max_pixels: int, formats: Collection[str] | None = None) -> Image.Image:
    """Open and decode an image judged by its bytes alone.

    `formats` (PIL names, e.g. {"JPEG", "PNG"}) limits the decoders tried; an image of another
    known format is UnsupportedMediaType, bytes no decoder recognises are InvalidImage. The pixel
    count is checked from the header, before anything is decoded. Of an animated or multi-page
    image only the first frame is used.
    """
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    allowed = sorted(formats) if formats is not None else None
    try:
        image = Image.open(io.BytesIO(data), formats=allowed)
        width, height = image.size
        if width * height > max_pixels:
            raise ImageTooLarge(f"image is {width}x{height} = {width * height:,} pixels; the limit is {max_pixels:,}")
        image.load()  # the first frame only
    except ImageTooLarge:
        raise
    except Image.DecompressionBombError:
        # PIL's own bomb check (over ~179 Mpx) fires inside Image.open, before ours can run.
        raise ImageTooLarge(f"image has far more pixels than the limit of {max_pixels:,}") from None
    except UnidentifiedImageError:
        raise _unrecognised(data, allowed) from None
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, struct.error, ...
        raise InvalidImage(f"not a decodable image: {_describe(e)}") from None
    return image


def _unrecognised(data: bytes, allowed: list[str] | None) -> ApiError:
    """Why no allowed decoder took these bytes: a format we refuse, markup, or not an image."""
    accepted = f"accepted formats: {', '.join(allowed)}" if allowed else ""
    if data.lstrip()[:1] == b"<":
        return UnsupportedMediaType(f"markup (SVG, XML or HTML) is not an accepted image; {accepted}".rstrip("; "))
    if allowed is not None:
        try:
            with Image.open(io.BytesIO(data)) as other:
                return UnsupportedMediaType(f"{other.format} images are not accepted; {accepted}")
        except Exception:
            pass
    return InvalidImage("not an image in a recognised format")


def to_rgb(image: Image.Image) -> Image.Image:
    """Upright 8-bit RGB: EXIF orientation applied, alpha flattened on white, 16-bit scaled down."""
    image = ImageOps.exif_transpose(image)
    if image.mode in _SIXTEEN_BIT_MODES:
        pixels = np.asarray(image, dtype=np.float64)
        image = Image.fromarray(np.clip(pixels / 257.0, 0, 255).round().astype(np.uint8), mode="L")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in {"LA", "PA", "La", "RGBa"}:
        image = image.convert("RGBA")
    if image.mode == "RGBA":
        background = Image.new("RGB", image.size, _BACKGROUND)
        background.paste(image, mask=image.getchannel("A"))
        return background
    try:
        return image.convert("RGB")
    except (ValueError, OSError) as e:
        raise InvalidImage(f"cannot convert image mode {image.mode} to RGB: {_describe(e)}") from None


def resize(image: Image.Image, spec: ModelSpec) -> Image.Image:
    """To spec.input_size square with the spec's resize policy; an image already that size is untouched."""
    size = (spec.input_size, spec.input_size)
    if image.size == size:
        return image
    method = _RESAMPLING[spec.interpolation]
    if spec.resize == "center_crop":
        return ImageOps.fit(image, size, method=method)
    return image.resize(size, method)


def normalize(pixels: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """uint8 (..., H, W, 3) -> float32 (..., 3, H, W), bit-identical to ToTensor() + Normalize(mean, std)."""
    x = pixels.astype(np.float32) / np.float32(255)
    normalised = (x - np.asarray(spec.mean, dtype=np.float32)) / np.asarray(spec.std, dtype=np.float32)
    return np.ascontiguousarray(np.moveaxis(normalised, -1, -3))


def preprocess(image: Image.Image, spec: ModelSpec) -> np.ndarray:
    """One decoded image -> float32 (3, H, W) model input."""
    return normalize(np.asarray(resize(to_rgb(image), spec)), spec)


def preprocess_batch(images: Sequence[Image.Image], spec: ModelSpec) -> np.ndarray:
    """Decoded images -> float32 (N, 3, H, W) model input."""
    pixels = np.stack([np.asarray(resize(to_rgb(image), spec)) for image in images])
    return normalize(pixels, spec)


def _describe(e: BaseException) -> str:
    text = str(e).splitlines()[0] if str(e) else ""
    return f"{type(e).__name__}: {text}"[:200] if text else type(e).__name__
