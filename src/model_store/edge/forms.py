"""The image routes' bodies, read within limits and parsed once.

`Bodies` parses a route's multipart body with its checks (only the route's file fields, files not
text or URLs, per-file size, how many files) and hands the files to the route in memory through
the request scope; `UploadedForm`, the routes' input spec, takes them from there, so BentoML never
parses the body again nor writes the files to disk (where a long filename used to fail). A route of
one file (`/classify`) also takes the image as the whole body, sent with an `image/*` Content-Type
(`curl --data-binary @cat.jpg -H 'Content-Type: image/jpeg'`, a webhook): the same upload, the same
checks. `/classify_json` takes the images as base64 in JSON (`{"images": [...]}`, or KServe v1's
`{"instances": [{"b64": ...}]}`), decoded here into the same uploads, within the same limits counted
on the decoded bytes. An Open Inference Protocol inference request (model_store.oip) is parsed here
too, within the same limits, and handed to its route through the request scope. Which of these a route takes, and its
limits, is its entry in the route table (edge/table.py).
"""

from __future__ import annotations

import typing
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import bentoml
from pydantic import TypeAdapter, ValidationError
from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import MultiPartParser

from ..bentoml_internals import ParsedByEdge, multipart_fields
from ..encoded import base64_length, decode_base64
from ..errors import PayloadTooLarge, TooManyImages, UnsupportedMediaType, ValidationFailed
from ..oip import HEADER_LENGTH, inflate, parse_infer
from ..schemas import ImagesRequest, InstancesRequest
from .asgi import Receive, Scope, replay
from .routes import Kind

if TYPE_CHECKING:
    from .context import RequestContext

FORM = "pyramidnet.form"
INFER = "pyramidnet.infer"  # the scope key an Open Inference Protocol request is left under
_SHOWN = 80  # characters of a client-chosen name quoted back in a message
JsonBody = ImagesRequest | InstancesRequest
JSON_BODY: TypeAdapter[JsonBody] = TypeAdapter(JsonBody)
JSON_SHAPES = 'send {"images": ["<base64>", ...]} or {"instances": [{"b64": "<base64>"}, ...]} as application/json'


@dataclass(frozen=True)
class Upload:
    """One uploaded file, in memory."""

    filename: str | None
    content_type: str | None
    data: bytes


class UploadedForm(ParsedByEdge):
    """Input spec of a route whose body `Bodies` reads: its fields declare the files (for the OpenAPI
    document and the generated client); their values are the `Upload`s Bodies parsed."""

    SCOPE_KEY = FORM

    @classmethod
    def from_scope(cls, value: dict[str, list[Upload]]) -> UploadedForm:
        return cls.model_construct(**{name: value[name] if _is_list(cls, name) else value[name][0] for name in value})


def form_fields(spec: type[bentoml.IODescriptor], max_files: int) -> dict[str, int]:
    """{file field: most files it takes} of an input spec: `max_files` for a list field, else 1."""
    return {name: max_files if _is_list(spec, name) else 1 for name in multipart_fields(spec)}


def raw_field(expected: Mapping[str, int]) -> str | None:
    """The field a raw image body fills: a route's one field of one file, if it has exactly that."""
    return next(iter(expected)) if list(expected.values()) == [1] else None


class Bodies:
    """Reads a POST's body within `max_request_bytes` and parses it as its route's kind says
    (edge/routes.py), once: what the handler takes is left in the scope it gets."""

    def __init__(self, *, max_request_bytes: int, max_file_bytes: int) -> None:
        self.max_request_bytes = max_request_bytes
        self.max_file_bytes = max_file_bytes

    async def read(self, ctx: RequestContext, scope: Scope, receive: Receive) -> tuple[Scope, Receive]:
        """The scope and receive() the handler gets; `ctx` learns how many images the body carries."""
        kind, headers = ctx.route.kind, Headers(scope=scope)
        if kind is Kind.BASE64:
            body = await self.read_body(receive, base64_length(self.max_request_bytes))
            files = {"images": self.parse_json(headers, body, ctx.route.files["images"])}
            ctx.images = len(files["images"])
            return {**scope, FORM: files}, replay(b"", receive)
        if kind is Kind.INFER:
            assert ctx.route.infer is not None
            limit = base64_length(self.max_request_bytes)
            body = inflate(await self.read_body(receive, limit), headers.get("content-encoding", ""), limit)
            request = parse_infer(headers.get("content-type", ""), headers.get(HEADER_LENGTH), body, ctx.route.infer)
            ctx.images = request.count
            return {**scope, INFER: request}, replay(b"", receive)
        if kind is Kind.QUERY:  # BentoML answers a body it cannot parse with a 500: give it what it expects
            await self.read_body(receive, self.max_request_bytes)
            kept = [(k, v) for k, v in scope["headers"] if k not in (b"content-type", b"content-length")]
            json_headers = [(b"content-type", b"application/json"), (b"content-length", b"2")]
            return {**scope, "headers": [*kept, *json_headers]}, replay(b"{}", receive)
        body = await self.read_body(receive, self.max_request_bytes)
        files = await self.parse(headers, body, ctx.route.files)
        ctx.images = sum(len(v) for v in files.values())
        return {**scope, FORM: files}, replay(b"", receive)

    async def read_body(self, receive: Receive, limit: int) -> bytes:
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > limit:
                raise PayloadTooLarge(f"request body exceeds the limit of {limit:,} bytes")
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    async def parse(self, headers: Headers, body: bytes, expected: Mapping[str, int]) -> dict[str, list[Upload]]:
        names = _names(expected)
        content_type = headers.get("content-type", "")
        raw = raw_field(expected)
        if raw is not None and content_type.lower().startswith("image/"):
            if len(body) > self.max_file_bytes:
                raise PayloadTooLarge(f"the image is {len(body):,} bytes; the limit is {self.max_file_bytes:,}")
            return {raw: [Upload(None, content_type, body)]}
        if not content_type.startswith("multipart/form-data"):
            raise UnsupportedMediaType(
                f"send the image(s) as multipart/form-data in {names}"
                + (", or one image as the body with an image/* Content-Type" if raw is not None else "")
            )
        limit = sum(expected.values())
        parser = MultiPartParser(headers, _once(body), max_files=limit + 1, max_fields=len(expected) + 8)
        try:
            form = await parser.parse()
        except Exception as e:  # any failure to parse hostile bytes is a malformed body, nothing more
            if "Too many files" in str(e):
                raise TooManyImages(
                    f"more than {limit} file(s) in one request to this route"
                    + ("; send several images to /classify_batch" if limit == 1 else "")
                ) from None
            why = str(e.__cause__ or e)[:200] or type(e).__name__  # python-multipart's reason, when it gave one
            raise ValidationFailed(f"malformed multipart body: {why}") from None
        try:
            files: dict[str, list[Upload]] = {}
            for name, value in form.multi_items():
                if name not in expected:
                    raise ValidationFailed(f"unexpected form field {name[:_SHOWN]!r}; this route takes {names}")
                if not isinstance(value, UploadFile):
                    raise ValidationFailed(f"form field {name!r} must be a file upload (URLs and text are refused)")
                if (value.size or 0) > self.max_file_bytes:
                    raise PayloadTooLarge(
                        f"file {(value.filename or name)[:_SHOWN]!r} is {value.size:,} bytes; "
                        f"the limit is {self.max_file_bytes:,}"
                    )
                files.setdefault(name, []).append(Upload(value.filename, value.content_type, await value.read()))
            if missing := set(expected) - set(files):
                raise ValidationFailed(f"missing form field {_names(missing)}")
            for name, uploads in files.items():
                if len(uploads) > expected[name]:
                    raise TooManyImages(
                        f"{len(uploads)} files in {name!r}; the limit is {expected[name]}"
                        + ("; send several images to /classify_batch" if expected[name] == 1 else "")
                    )
            return files
        finally:
            await form.close()

    def parse_json(self, headers: Headers, body: bytes, most: int) -> list[Upload]:
        """The images of a JSON body, decoded from base64 (whitespace and a `data:...;base64,` prefix
        allowed), each within the file limit."""
        if not headers.get("content-type", "").startswith("application/json"):
            raise UnsupportedMediaType(JSON_SHAPES)
        try:
            request = JSON_BODY.validate_json(body)
        except ValidationError as e:
            error = e.errors()[0]
            where = ".".join(str(part) for part in error["loc"][1:])
            raise ValidationFailed(f"{error['msg']}{f' at {where}' if where else ''}: {JSON_SHAPES}") from None
        encoded = request.images if isinstance(request, ImagesRequest) else [i.b64 for i in request.instances]
        if len(encoded) > most:
            raise TooManyImages(f"{len(encoded)} images; the limit is {most}")
        return [
            Upload(None, None, decode_base64(text, f"images[{i}]", self.max_file_bytes))
            for i, text in enumerate(encoded)
        ]


def _is_list(spec: type[bentoml.IODescriptor], name: str) -> bool:
    return typing.get_origin(spec.model_fields[name].annotation) is list


def _names(fields: Mapping[str, Any] | set[str]) -> str:
    return ", ".join(repr(f) for f in sorted(fields)) or "no form fields"


async def _once(body: bytes) -> AsyncGenerator[bytes, None]:
    yield body
