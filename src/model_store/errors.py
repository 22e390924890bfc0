"""The service's error contract, in one place: every non-2xx answer is one of these classes, as
`{"error": {"code": "<UPPER_SNAKE>", "message": "<sentence>"}, "request_id": "<id>"}`.

`CODES` gives the code of an answer by its status when the framework made it (a 404, a 500);
`error_body` is the shape; edge/contract.py renders every answer in it, once.
"""

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


class NotFound(ApiError):
    status, code = 404, "NOT_FOUND"


class ModelNotFound(ApiError):
    """The Open Inference Protocol's routes: no such model, or no such version of it, here."""

    status, code = 404, "MODEL_NOT_FOUND"


class MethodNotAllowed(ApiError):
    status, code = 405, "METHOD_NOT_ALLOWED"


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


class ModelUnavailable(ApiError):
    """The runner could not load the model and will not try again: /livez turns 503 with this code
    too, so that the orchestrator restarts the server."""

    status, code = 503, "MODEL_UNAVAILABLE"
    retry_after = 30

    def __init__(self) -> None:
        super().__init__("the model could not be loaded; the server needs a restart (its log says why)")


class NotReady(ApiError):
    """/readyz only: the model is loading or warming up, or its last forward passes all failed."""

    status, code = 503, "NOT_READY"
    retry_after = 5

    def __init__(self) -> None:
        super().__init__("not ready: the model is loading or warming up, or failing its forward passes")


class Timeout(ApiError):
    status, code = 504, "TIMEOUT"


# Every error the routes answer with, for the OpenAPI document and the docs. The probes' 503s are
# NOT_READY (/readyz) and MODEL_UNAVAILABLE (/livez, /healthz).
ALL_ERRORS: tuple[type[ApiError], ...] = (
    InvalidImage,
    ValidationFailed,
    Unauthorized,
    NotFound,
    MethodNotAllowed,
    PayloadTooLarge,
    ImageTooLarge,
    TooManyImages,
    UnsupportedMediaType,
    Internal,
    Overloaded,
    ModelUnavailable,
    Timeout,
)

# The code of an error answer the framework made, by status (its own 400s are validation errors).
CODES: dict[int, str] = {400: "VALIDATION_ERROR", 422: "VALIDATION_ERROR"} | {
    e.status: e.code
    for e in (
        Unauthorized,
        NotFound,
        MethodNotAllowed,
        PayloadTooLarge,
        UnsupportedMediaType,
        Internal,
        Overloaded,
        Timeout,
    )
}

INTERNAL_MESSAGE = "the server failed to process the request; quote the request id when reporting it"


def error_body(
    code: str, message: str, request_id: str | None = None, retry_after: int | None = None
) -> dict[str, Any]:
    """The one shape of every error answer."""
    body: dict[str, Any] = {"error": {"code": code, "message": message}}
    if retry_after is not None:  # also in a header; here for clients that do not expose headers
        body["error"]["retry_after"] = retry_after
    if request_id is not None:
        body["request_id"] = request_id
    return body
