"""Join the batches an API worker sends the runner while its earlier calls are in flight.

Every runner call costs the runner CPU outside the model (HTTP, pickle, tracing, the batcher),
and small forward passes cost more per image than full ones. An API worker therefore keeps at
most `max_in_flight` calls open (one by default); requests that arrive meanwhile wait in one
queue and go together, as one float32 (N, 3, S, S) array, in the next call: fuller forward passes,
fewer calls (docs/performance/serving.md#where-the-cpu-goes measures one call in flight against two). Each
request gets its own rows back, in order; a failed call fails every request in it.

Each call is a span, `runner call`: the child of the first request's span in it, linked to the
others', and the parent of the runner's own span (BentoML's client sends its W3C `traceparent`).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable

import numpy as np
from opentelemetry import trace

from .bentoml_internals import tracer

Call = Callable[[np.ndarray], Awaitable[np.ndarray]]
Waiting = tuple[np.ndarray, "asyncio.Future[np.ndarray]", trace.SpanContext]


class Coalescer:
    """`await coalescer(batch)` answers like `await call(batch)`, with fewer, larger calls."""

    def __init__(self, call: Call, *, max_images: int, max_in_flight: int = 1) -> None:
        self._call = call
        self._max_images = max_images
        self._max_in_flight = max_in_flight
        self._in_flight = 0
        self._queue: deque[Waiting] = deque()
        self._calls: set[asyncio.Task[None]] = set()  # the loop keeps only weak references to tasks
        self._tracer = tracer("pyramidnet.coalesce")

    async def __call__(self, batch: np.ndarray) -> np.ndarray:
        answer: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        self._queue.append((batch, answer, trace.get_current_span().get_span_context()))
        self._dispatch()
        return await answer

    def _dispatch(self) -> None:
        while self._queue and self._in_flight < self._max_in_flight:
            group: list[Waiting] = []
            images = 0
            while self._queue and (not group or images + len(self._queue[0][0]) <= self._max_images):
                waiting = self._queue.popleft()
                if waiting[1].cancelled():  # its client left (timeout, disconnect): do not compute it
                    continue
                group.append(waiting)
                images += len(waiting[0])
            if group:
                self._in_flight += 1
                call = asyncio.ensure_future(self._send(group))
                self._calls.add(call)
                call.add_done_callback(self._calls.discard)

    async def _send(self, group: list[Waiting]) -> None:
        try:
            batches = [batch for batch, _, _ in group]
            parent = trace.set_span_in_context(trace.NonRecordingSpan(group[0][2]))
            links = [trace.Link(caller) for _, _, caller in group[1:] if caller.is_valid]
            attributes = {"pyramidnet.images": sum(len(b) for b in batches), "pyramidnet.requests": len(group)}
            with self._tracer.start_as_current_span("runner call", parent, links=links, attributes=attributes):
                result = await self._call(batches[0] if len(batches) == 1 else np.concatenate(batches))
        except Exception as e:
            for _, answer, _ in group:
                if not answer.done():
                    answer.set_exception(e)
        except BaseException:  # this call was cancelled (shutdown): so are its requests
            for _, answer, _ in group:
                answer.cancel()
            raise
        else:
            start = 0
            for batch, answer, _ in group:
                if not answer.done():
                    answer.set_result(result[start : start + len(batch)])
                start += len(batch)
        finally:
            self._in_flight -= 1
            self._dispatch()
