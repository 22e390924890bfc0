"""The service's HTTP edge: one ASGI middleware, the front hall (hall.py), that reads each request's
entry in the route table (table.py, routes.py), makes its context (context.py), reads its body
(forms.py), admits it (admission.py, ledger.py), renders its errors once (contract.py) and observes
it once (observer.py). The Open Inference Protocol's routes are oip.py; the OpenAPI document and
its page, docs.py."""

from .admission import Admission
from .contract import answers_errors
from .docs import Document
from .forms import Bodies, Upload, UploadedForm
from .hall import Hall
from .ledger import Ledger
from .routes import Kind, Route, RouteTable
from .table import ClassifyBatchInput, ClassifyInput, ClassifyJsonInput, service_routes

__all__ = [
    "Admission",
    "Bodies",
    "ClassifyBatchInput",
    "ClassifyInput",
    "ClassifyJsonInput",
    "Document",
    "Hall",
    "Kind",
    "Ledger",
    "Route",
    "RouteTable",
    "Upload",
    "UploadedForm",
    "answers_errors",
    "service_routes",
]
