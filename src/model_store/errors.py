"""Errors a client can cause, each with its HTTP status and machine-readable code."""

from __future__ import annotations

from typing import Any, ClassVar


class ClientError(Exception):
    """A request the service refuses; `code` is stable, `str(self)` is a sentence for humans."""

    status: ClassVar[int] = 400
    code: ClassVar[str] = "BAD_REQUEST"


class InvalidImage(ClientError):
    status = 400
    code = "INVALID_IMAGE"


class PayloadTooLarge(ClientError):
    status = 413
    code = "PAYLOAD_TOO_LARGE"


class ImageTooLarge(ClientError):
    status = 413
    code = "IMAGE_TOO_LARGE"


class TooManyImages(ClientError):
    status = 413
    code = "TOO_MANY_IMAGES"


class ValidationFailed(ClientError):
    status = 400
    code = "VALIDATION_ERROR"


def error_body(code: str, message: str) -> dict[str, Any]:
    """The one shape of every error answer."""
    return {"error": {"code": code, "message": message}}
