"""Every place this project relies on BentoML beyond its public API, in one module.

Nothing else imports `bentoml._internal`, `_bentoml_impl` or `_bentoml_sdk`, or overrides a
private method (tests/unit/test_bentoml_internals.py checks the repository for it, and
import-linter's contract in pyproject.toml checks the package). Each touch point below has a unit
test that fails with a message naming it when an upgrade changes what it relies on.

Why BentoML is pinned to `>=1.4.36,<1.4.40` (pyproject.toml): these touch points were read in the
1.4.36-1.4.39 sources and are tested against what is installed; 1.4.40 also needs a certifi
newer than the package index here has (../shared/BENTOML_NOTES.md). Raise the bound after the unit
tier passes on the new release.

The touch points:

- `cpu_budget`: the CPU quota as BentoML reads it from cgroups v1 and v2
  (`bentoml._internal.resource.system_resources`); no public API gives it.
- `ParsedByEdge`: an input spec whose value the edge has already parsed into the request scope.
  It overrides `IODescriptor.from_http_request`, the private hook through which BentoML reads a
  request into a route's input; the edge parses each body once, with limits (edge/forms.py).
- `multipart_fields`: the file fields BentoML found in an input spec (`IODescriptor.multipart_fields`,
  undocumented); the edge sizes its multipart limits from it.
- `framework_error_message`: the message inside BentoML's and Starlette's own error bodies, whose
  shapes are not part of any API; the edge rewrites them into the error contract (edge/contract.py).
- `is_service_worker`: how a service worker process shows in `ps` (the benchmarks tell roles apart by it).
- `tracer`: a tracer of BentoML's tracer provider (`BentoMLContainer.tracer_provider`), which its
  `tracing` settings configure and which it does not make OpenTelemetry's global provider.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, ClassVar

import bentoml
from bentoml._internal.configuration.containers import BentoMLContainer
from bentoml._internal.resource import system_resources
from opentelemetry import trace

# BentoML's private packages: only this module may name them (a unit test searches the repository).
PRIVATE_PACKAGES = ("bentoml._internal", "_bentoml_impl", "_bentoml_sdk")
# What an API worker's command line names (`python -m _bentoml_impl.worker.service ...`).
API_WORKER_MODULE = "_bentoml_impl.worker"


def cpu_budget() -> float:
    """Cores of CPU time this process may use: its CPU set (not the host's count), capped by a CPU
    quota (a container's `--cpus`, a Kubernetes CPU limit: cgroup v1 or v2, read by BentoML)."""
    visible = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return min(float(visible), float(system_resources()["cpu"]))


class ParsedByEdge(bentoml.IODescriptor):  # type: ignore[misc]  # BentoML's pydantic-made base is Any to mypy
    """A route's input spec whose value an ASGI middleware put in the request scope under `SCOPE_KEY`.

    Its fields still declare the inputs, for the OpenAPI document and the generated client; BentoML
    does not parse the body again. Subclasses build themselves from the scope's value (`from_scope`).
    """

    SCOPE_KEY: ClassVar[str]

    @classmethod
    async def from_http_request(cls, request: Any, serde: Any) -> ParsedByEdge:
        return cls.from_scope(request.scope[cls.SCOPE_KEY])

    @classmethod
    def from_scope(cls, value: Any) -> ParsedByEdge:
        raise NotImplementedError


def multipart_fields(spec: type[bentoml.IODescriptor]) -> list[str]:
    """The fields of an input spec that BentoML takes as uploaded files."""
    return list(spec.multipart_fields)


def framework_error_message(data: Any) -> str | None:
    """The message in an error body that BentoML or Starlette made (parsed JSON), whatever its shape:
    `{"error": ..., "detail": [pydantic errors]}`, `{"detail": "..."}`, `{"error": "..."}` or
    `[{"error": "..."}]`; None for any other body."""
    if isinstance(data, Mapping) and isinstance(data.get("detail"), list):
        return "; ".join(_describe(d) for d in data["detail"]) or str(data.get("error"))
    if isinstance(data, Mapping) and isinstance(data.get("error") or data.get("detail"), str):
        return data.get("error") or data["detail"]
    if isinstance(data, list) and data and isinstance(data[0], Mapping) and "error" in data[0]:
        return str(data[0]["error"])
    return None


def is_service_worker(cmdline: str) -> bool:
    """Whether a process's command line is one of BentoML's service workers."""
    return API_WORKER_MODULE in cmdline


def _describe(detail: Any) -> str:
    if not isinstance(detail, Mapping):
        return str(detail)
    where = ".".join(str(p) for p in detail.get("loc", ()))
    return f"{where}: {detail.get('msg', 'invalid')}" if where else str(detail.get("msg", "invalid"))


def tracer(name: str) -> trace.Tracer:
    """A tracer of the provider BentoML configures from its `tracing` settings (the exporter, the
    sample rate), whose spans join the server span BentoML's OpenTelemetry middleware opens: BentoML
    keeps its provider to itself rather than making it OpenTelemetry's global one."""
    return BentoMLContainer.tracer_provider.get().get_tracer(name)
