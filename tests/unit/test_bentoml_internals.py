"""Each place the project relies on BentoML beyond its public API (model_store/bentoml_internals.py).

A failure here after a BentoML upgrade names the touch point that moved: mend it in that module,
then raise the pin in pyproject.toml.
"""

from __future__ import annotations

import inspect
import json
import os
import re
from pathlib import Path
from typing import Annotated

import bentoml
import pytest
from bentoml.validators import ContentType
from pydantic import Field

from model_store import bentoml_internals
from model_store.bentoml_internals import ParsedByEdge, framework_error_message, is_service_worker, multipart_fields

REPO = Path(__file__).resolve().parents[2]
PRIVATE = re.compile("|".join(re.escape(name) for name in bentoml_internals.PRIVATE_PACKAGES))


def test_only_one_module_of_the_project_names_bentomls_private_packages():
    sources = []
    for folder, subfolders, files in os.walk(REPO):
        subfolders[:] = [d for d in subfolders if not d.startswith(".") and d not in ("build", "__pycache__")]
        sources += [Path(folder) / f for f in files if f.endswith(".py")]
    naming = sorted(str(p.relative_to(REPO)) for p in sources if PRIVATE.search(p.read_text()))
    assert naming == ["src/model_store/bentoml_internals.py"], naming


def test_the_cpu_quota_reader_still_answers_in_cores():
    quota = bentoml_internals.system_resources()
    assert "cpu" in quota, "BentoML's system_resources() no longer reports 'cpu'"
    assert float(quota["cpu"]) > 0
    assert 0 < bentoml_internals.cpu_budget() <= len(os.sched_getaffinity(0))


def test_the_input_hook_the_edge_overrides_still_exists_with_its_signature():
    hook = getattr(bentoml.IODescriptor, "from_http_request", None)
    assert hook is not None, "IODescriptor.from_http_request is gone: ParsedByEdge no longer receives the edge's parse"
    assert list(inspect.signature(hook).parameters) == ["request", "serde"], inspect.signature(hook)


def test_an_input_parsed_by_the_edge_is_built_from_the_request_scope():
    class Parsed(ParsedByEdge):
        SCOPE_KEY = "test.parsed"
        text: str = Field(description="a field")

        @classmethod
        def from_scope(cls, value: str) -> Parsed:
            return cls.model_construct(text=value)

    class Request:
        scope = {"test.parsed": "from the edge"}  # noqa: RUF012 - a stand-in for Starlette's request

    import asyncio

    assert asyncio.run(Parsed.from_http_request(Request(), None)).text == "from the edge"


def test_bentoml_still_names_the_file_fields_of_an_input_spec():
    class Spec(bentoml.IODescriptor):
        image: Annotated[Path, ContentType("image/*")]
        images: list[Annotated[Path, ContentType("image/*")]]
        note: str = ""

    assert sorted(multipart_fields(Spec)) == ["image", "images"], "IODescriptor.multipart_fields changed"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"error": "invalid", "detail": [{"loc": ["body", "image"], "msg": "field required"}]},
            "body.image: field required",
        ),
        ({"detail": "Method Not Allowed"}, "Method Not Allowed"),
        ({"error": "not found"}, "not found"),
        ([{"error": "bad value"}], "bad value"),
        ({"other": 1}, None),
        ("text", None),
    ],
)
def test_the_framework_error_bodies_the_edge_rewrites(body, message):
    assert framework_error_message(json.loads(json.dumps(body))) == message


def test_a_service_worker_is_told_by_its_command_line():
    worker = f"/venv/bin/python -m {bentoml_internals.API_WORKER_MODULE}.service service:PyramidNetClassifier"
    assert is_service_worker(worker)
    assert not is_service_worker("/venv/bin/python -m bentoml serve service:PyramidNetClassifier")


def test_the_server_context_the_service_reads_is_public():
    assert hasattr(bentoml.server_context, "worker_index"), "bentoml.server_context.worker_index is gone"
