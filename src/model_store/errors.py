"""The service's error contract: every non-2xx answer is one of these, as
`{"error": {"code": "<UPPER_SNAKE>", "message": "<sentence>"}, "request_id": "<id>"}`."""

from __future__ import annotations

from typing import Any, ClassVar


class ApiError(Exception):
    """A request the service does not answer with a result; `code` is stable, `str(self)` is for humans."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "INTERNAL"
    retry_after: int | None = None


class InvalidImage(ApiError):
    status, code = 400, "INVALID_IMAGE"


class ValidationFailed(ApiError):
    status, code = 400, "VALIDATION_ERROR"


class Unauthorized(ApiError):
    status, code = 401, "UNAUTHORIZED"


class PayloadTooLarge(ApiError):
    status, code = 413, "PAYLOAD_TOO_LARGE"


class ImageTooLarge(ApiError):
    status, code = 413, "IMAGE_TOO_LARGE"


class TooManyImages(ApiError):
    status, code = 413, "TOO_MANY_IMAGES"


class UnsupportedMediaType(ApiError):
    status, code = 415, "UNSUPPORTED_MEDIA_TYPE"


class Internal(ApiError):
    status, code = 500, "INTERNAL"


class Overloaded(ApiError):
    status, code = 503, "OVERLOADED"

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class NotReady(ApiError):
    status, code = 503, "NOT_READY"
    retry_after = 5


class Timeout(ApiError):
    status, code = 504, "TIMEOUT"


# Every code the service can answer with, for the OpenAPI schema and the docs.
ALL_ERRORS: tuple[type[ApiError], ...] = (
    InvalidImage, ValidationFailed, Unauthorized, PayloadTooLarge, ImageTooLarge, TooManyImages,
    UnsupportedMediaType, Internal, Overloaded, NotReady, Timeout,
)  # fmt: skip

INTERNAL_MESSAGE = "the server failed to process the request; quote the request id when reporting it"


def error_body(code: str, message: str, request_id: str | None = None) -> dict[str, Any]:
    """The one shape of every error answer."""
    body: dict[str, Any] = {"error": {"code": code, "message": message}}
    if request_id is not None:
        body["request_id"] = request_id
    return body
