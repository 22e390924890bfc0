"""The service's HTTP edge: small ASGI middlewares, one job each, in the order service.py stacks
them (outermost first): RequestId, AccessLog, RequestMetrics, ApiDocs, ErrorContract, SecurityHeaders, ApiKeys,
Forms, Admission, Deadline."""

from .access_log import AccessLog
from .admission import Admission
from .auth import ApiKeys
from .contract import ErrorContract
from .deadline import Deadline
from .docs import ApiDocs
from .forms import Forms, Upload, UploadedForm, form_fields
from .ledger import Ledger
from .metrics import RequestMetrics
from .request_id import RequestId
from .security import SecurityHeaders

__all__ = [
    "AccessLog",
    "Admission",
    "ApiDocs",
    "ApiKeys",
    "Deadline",
    "ErrorContract",
    "Forms",
    "Ledger",
    "RequestId",
    "RequestMetrics",
    "SecurityHeaders",
    "Upload",
    "UploadedForm",
    "form_fields",
]
