"""Files sent as base64 text in JSON bodies (/classify_json, the Open Inference Protocol's BYTES in
JSON): decoded within a limit counted on the decoded bytes."""

from __future__ import annotations

import base64
import binascii
import math

from .errors import PayloadTooLarge, ValidationFailed


def base64_length(size: int) -> int:
    """The length of `size` bytes in base64: the limits of a JSON body, scaled for the inflation."""
    return 4 * math.ceil(size / 3)


def decode_base64(text: str, where: str, max_bytes: int) -> bytes:
    """The bytes of one file in base64 (RFC 4648; whitespace and a `data:...;base64,` prefix allowed),
    at most `max_bytes` of them; `where` names it in an error's message."""
    text = "".join(text.split())
    if text.startswith("data:") and ";base64," in text:  # a data URL, as a browser makes one
        text = text.split(";base64,", 1)[1]
    if len(text) > base64_length(max_bytes):  # refused before decoding
        raise PayloadTooLarge(f"{where} is over the limit of {max_bytes:,} bytes")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise ValidationFailed(f"{where} is not base64 ({e})") from None
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"{where} is {len(data):,} bytes; the limit is {max_bytes:,}")
    return data
