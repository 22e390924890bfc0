"""Client-side help for images held in memory.

BentoML's generated client (`bentoml.SyncHTTPClient`, 1.4) uploads a PIL image by sending the file
it was opened from (`image.fp`); an image made or changed in memory has none, and the call fails
with `AttributeError: 'Image' object has no attribute 'fp'`. `uploadable` gives it one:

    client.classify(image=uploadable(pil_image))
    client.classify_batch(images=[uploadable(a) for a in uint8_arrays])
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def uploadable(image: Image.Image | np.ndarray | bytes) -> Image.Image:
    """A PIL image, a uint8 (H, W, 3) RGB or (H, W) grey array, or encoded bytes, as a PIL image
    the generated client can send: encoded as PNG (lossless, so the service sees exactly these
    pixels) and opened from memory. Encoded bytes are sent as they are."""
    if isinstance(image, bytes | bytearray):
        return Image.open(io.BytesIO(image))
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (3, 4))):
            raise ValueError(f"expected a uint8 (H, W), (H, W, 3) or (H, W, 4) array, got {image.dtype} {image.shape}")
        image = Image.fromarray(image)
    if not isinstance(image, Image.Image):
        raise TypeError(f"expected a PIL image, a uint8 array or encoded bytes, got {type(image).__name__}")
    if image.mode not in ("1", "L", "LA", "I", "I;16", "P", "RGB", "RGBA"):  # what PNG holds
        image = image.convert("RGB")  # CMYK, YCbCr, float: the service classifies RGB in any case
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    buffer.seek(0)
    return Image.open(buffer)
