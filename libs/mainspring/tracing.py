"""W3C trace context on the bus: one trace follows a chain of runs across services.

Every message published carries a `traceparent` header. A service handling a message opens a
span that continues the trace in its headers, so what it publishes while handling (a run
request, a run's completion, the next request of a chain) stays in the same trace. Spans are
made for their ids and parentage only: no exporter is configured, so tracing costs a few
microseconds per message and nothing leaves the process.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from typing import Any

from faststream import BaseMiddleware
from opentelemetry import context, trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

TRACEPARENT = "traceparent"

_PROPAGATOR = TraceContextTextMapPropagator()
# A provider of our own with no span processor: ids and context propagation, no export.
_PROVIDER = TracerProvider(shutdown_on_exit=False)
_TRACER = _PROVIDER.get_tracer("mainspring")


def inject(headers: MutableMapping[str, str]) -> MutableMapping[str, str]:
    """Add the current trace's `traceparent`; a message sent outside any trace starts one."""
    current = context.get_current()
    if not trace.get_current_span(current).get_span_context().is_valid:
        root = _TRACER.start_span("publish", kind=SpanKind.PRODUCER)
        current = trace.set_span_in_context(root)
        root.end()
    _PROPAGATOR.inject(headers, context=current)
    return headers


def trace_id_of(headers: Mapping[str, str] | None) -> str | None:
    """The trace id a message's headers carry (32 hex digits), or None."""
    span_context = trace.get_current_span(_PROPAGATOR.extract(dict(headers or {})))
    found = span_context.get_span_context()
    return format(found.trace_id, "032x") if found.is_valid else None


def current_trace_id() -> str | None:
    """The trace id of the message being handled (32 hex digits), or None outside a trace."""
    found = trace.get_current_span().get_span_context()
    return format(found.trace_id, "032x") if found.is_valid else None


@contextmanager
def handling(headers: Mapping[str, Any] | None, name: str) -> Iterator[trace.Span]:
    """A span for one handled message, continuing the trace its headers carry (or a new one)."""
    carrier = {k: v for k, v in (headers or {}).items() if isinstance(v, str)}
    parent = _PROPAGATOR.extract(carrier)
    with _TRACER.start_as_current_span(name, context=parent, kind=SpanKind.CONSUMER) as span:
        yield span


class TraceContextMiddleware(BaseMiddleware):
    """Broker middleware: handle each message in a span, stamp `traceparent` on each publish."""

    async def consume_scope(self, call_next: Callable[[Any], Awaitable[Any]], msg: Any) -> Any:
        """Continue the incoming message's trace while its handler runs."""
        subject = getattr(msg.raw_message, "subject", "message")
        with handling(msg.headers, f"{subject} process"):
            return await call_next(msg)

    async def publish_scope(self, call_next: Callable[[Any], Awaitable[Any]], cmd: Any) -> Any:
        """Carry the current trace (or start one) in the published message's headers."""
        if cmd.headers is None:
            cmd.headers = {}
        if TRACEPARENT not in cmd.headers:
            inject(cmd.headers)
        return await call_next(cmd)
