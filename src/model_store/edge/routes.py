"""Routes and their table: every path the service answers is declared once (edge/table.py), and
every part of the edge reads its entry.

A route's kind says how the edge treats it:

| kind | body the edge reads | API key | admitted, with a deadline | counted and logged | security headers |
| --- | --- | --- | --- | --- | --- |
| FILES | image files, multipart (or one as the whole body) | yes | yes | yes | yes |
| BASE64 | image files as base64 in JSON | yes | yes | yes | yes |
| INFER | an Open Inference Protocol inference request | yes | yes | yes | yes |
| QUERY | none (BentoML's routes are POSTs; it sees `{}`) | yes | no | yes | yes |
| PROTOCOL | none: the Open Inference Protocol's other routes | yes | no | yes | yes |
| DOCS | none: the docs page, its document and assets | yes, but the page (static HTML) | no | yes | no |
| PROBE | none: liveness and readiness | no | no | no | no |
| METRICS | none: the Prometheus scrape | no | no | no | no |

Adding a route is one entry in edge/table.py and its handler (tests/unit/test_edge.py adds one).
A path ending in `/` (but `/` itself) matches every path under it that no entry names (the
protocol's other models, the docs page's assets); a path no entry matches is OTHER: guarded,
counted as `other`, logged.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from ..errors import ApiError
from ..oip import InferLimits


class Kind(Enum):
    FILES = "files"
    BASE64 = "base64"
    INFER = "infer"
    QUERY = "query"
    PROTOCOL = "protocol"
    DOCS = "docs"
    PROBE = "probe"
    METRICS = "metrics"
    OTHER = "other"


IMAGES = frozenset({Kind.FILES, Kind.BASE64, Kind.INFER})
UNGUARDED = frozenset({Kind.PROBE, Kind.METRICS})
UNSECURED = frozenset({Kind.DOCS, Kind.PROBE, Kind.METRICS, Kind.OTHER})


@dataclass(frozen=True)
class Route:
    """One route. `files`: FILES, {form field: most files}; BASE64, {"images": most images}.
    `infer`: INFER's limits. `answer`: the type a 200 answers with (the OpenAPI document).
    `unready`: a probe's 503 (the error its framework answer means). `protocol`: errors take the
    Open Inference Protocol's shape."""

    path: str
    kind: Kind
    files: Mapping[str, int] = field(default_factory=dict)
    infer: InferLimits | None = None
    answer: Any = None
    unready: type[ApiError] | None = None
    protocol: bool = False

    @property
    def guarded(self) -> bool:
        """Needs an API key, when keys are configured."""
        return self.kind not in UNGUARDED

    @property
    def admitted(self) -> bool:
        """Carries images: admission control, a deadline, and its body read within limits."""
        return self.kind in IMAGES

    @property
    def reads_body(self) -> bool:
        """A POST's body is read by the edge (edge/forms.py), within limits."""
        return self.kind in IMAGES or self.kind is Kind.QUERY

    @property
    def counted(self) -> bool:
        """In the access log and the request metrics."""
        return self.kind not in UNGUARDED

    @property
    def secured(self) -> bool:
        """Answers with the security headers (edge/hall.py)."""
        return self.kind not in UNSECURED

    @property
    def label(self) -> str:
        """The `route` label of its metrics and log lines: never a client's string."""
        return "other" if self.kind is Kind.OTHER else self.path


OTHER = Route("", Kind.OTHER)


class RouteTable(Mapping[str, Route]):
    """The routes by path; `find` gives the route a request path takes."""

    def __init__(self, routes: Iterable[Route]) -> None:
        self._routes = {route.path: route for route in routes}
        self._prefixes = sorted((p for p in self._routes if p.endswith("/") and p != "/"), key=len, reverse=True)

    def __getitem__(self, path: str) -> Route:
        return self._routes[path]

    def __iter__(self) -> Iterator[str]:
        return iter(self._routes)

    def __len__(self) -> int:
        return len(self._routes)

    def find(self, path: str) -> Route:
        if (route := self._routes.get(path)) is not None:
            return route
        for prefix in self._prefixes:
            if path.startswith(prefix):
                return self._routes[prefix]
        return OTHER

    def of(self, *kinds: Kind) -> list[Route]:
        return [route for route in self._routes.values() if route.kind in kinds]

    def with_route(self, route: Route) -> RouteTable:
        """A copy with `route` added (or replacing the entry of its path)."""
        return RouteTable([*self._routes.values(), route])

    def check(self, handled: Iterable[str]) -> None:
        """Fail at start when a BentoML route (its path) has no entry, or an API entry no handler."""
        handled = set(handled)
        api = {r.path for r in self._routes.values() if r.kind in (Kind.FILES, Kind.BASE64, Kind.QUERY)}
        if missing := handled - set(self._routes):
            raise RuntimeError(f"routes without an entry in the route table: {sorted(missing)}")
        if unhandled := api - handled:
            raise RuntimeError(f"route table entries without a handler: {sorted(unhandled)}")
