"""W3C trace context on the bus and OpenTelemetry export: one trace follows a chain of runs.

Every message published carries a `traceparent` header. A service handling a message opens a
`process` span that continues the trace in its headers; what it publishes meanwhile gets a
`send` span, a child of it, so a chain of runs across services (and into the routine's own
process) is one tree.

Until `configure_tracing` runs (a client, a test), spans exist for their ids, parentage and
sampling decision only, and nothing is exported. Services call it at start; it reads the
standard `OTEL_*` variables (see README "Operations").

Span names and attributes follow the current messaging conventions (`messaging.operation.type`
`send`/`process`, `messaging.destination.name`), the names the project promises. FastStream's
own telemetry middleware emits the older ones (`messaging.operation`,
`messaging.destination_publish.name`) and a span per publish that is not the parent of what
the receiver does, so it is not used.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opentelemetry import context, trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
)
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import Attributes

TRACEPARENT = "traceparent"

log = logging.getLogger("mainspring")

_PROPAGATOR = TraceContextTextMapPropagator()


class TracingConfigError(ValueError):
    """An OTEL_* setting Mainspring cannot follow; the message names the fix."""


@dataclass
class _Active:
    """The provider spans come from: ids only until configure_tracing replaces it."""

    provider: TracerProvider
    processors: list[SpanProcessor] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.tracer = self.provider.get_tracer("mainspring")


# ---------------------------------------------------------------- names and attributes


def destination_template(subject: str) -> str:
    """The subject with its variable tokens wildcarded: low cardinality, for span names.

    Reply inboxes carry a random id per request; completions carry the routine and status.
    """
    if subject.startswith("_INBOX."):
        return "_INBOX.*"
    head = subject.split(".", 2)
    if len(head) == 3 and head[1] == "completed" and head[0] in ("run", "external"):
        return f"{head[0]}.completed.*.*"
    if head[0] == "deadletter":
        return "deadletter.>"
    return subject


def messaging_attributes(
    operation: str, subject: str, headers: Mapping[str, Any] | None, body_size: int | None
) -> dict[str, Any]:
    """The messaging convention's attributes of one send or process of a NATS message."""
    template = destination_template(subject)
    attributes: dict[str, Any] = {
        "messaging.system": "nats",
        "messaging.operation.type": operation,
        "messaging.operation.name": "publish" if operation == "send" else "process",
        # A reply inbox is a per-request id: the template names it, the id is left out.
        "messaging.destination.name": template if template == "_INBOX.*" else subject,
    }
    if template == "_INBOX.*":
        attributes["messaging.destination.temporary"] = True
    elif template != subject:
        attributes["messaging.destination.template"] = template
    message_id = (headers or {}).get("Nats-Msg-Id")
    if isinstance(message_id, str):
        attributes["messaging.message.id"] = message_id
    if body_size is not None:
        attributes["messaging.message.body.size"] = body_size
    return attributes


# ---------------------------------------------------------------- propagation


def inject(headers: MutableMapping[str, str]) -> MutableMapping[str, str]:
    """Add the current trace's `traceparent`; a message sent outside any trace starts one."""
    current = context.get_current()
    if not trace.get_current_span(current).get_span_context().is_valid:
        root = _active.tracer.start_span("send", kind=SpanKind.PRODUCER)
        current = trace.set_span_in_context(root)
        root.end()
    _PROPAGATOR.inject(headers, context=current)
    return headers


def extract(headers: Mapping[str, Any] | None) -> Context:
    """The context a message's (or a job's) `traceparent` carries; empty when it has none."""
    carrier = {k: v for k, v in (headers or {}).items() if isinstance(v, str)}
    return _PROPAGATOR.extract(carrier)


def trace_id_of(headers: Mapping[str, str] | None) -> str | None:
    """The trace id a message's headers carry (32 hex digits), or None."""
    found = trace.get_current_span(extract(headers)).get_span_context()
    return format(found.trace_id, "032x") if found.is_valid else None


def current_trace_id() -> str | None:
    """The trace id of the message being handled (32 hex digits), or None outside a trace."""
    found = trace.get_current_span().get_span_context()
    return format(found.trace_id, "032x") if found.is_valid else None


def current_ids() -> tuple[str, str] | None:
    """(trace id, span id) of the current span, for log lines; None outside a trace."""
    found = trace.get_current_span().get_span_context()
    if not found.is_valid:
        return None
    return format(found.trace_id, "032x"), format(found.span_id, "016x")


def current_traceparent() -> str | None:
    """The current span as a `traceparent` value, to hand to another process."""
    carrier: dict[str, str] = {}
    if trace.get_current_span().get_span_context().is_valid:
        _PROPAGATOR.inject(carrier)
    return carrier.get(TRACEPARENT)


@contextmanager
def handling(
    headers: Mapping[str, Any] | None, subject: str, body_size: int | None = None
) -> Iterator[trace.Span]:
    """A `process` span for one handled message, the child of the context its headers carry.

    A child, not a link: each message has exactly one creation context (no batches), and a
    chain of runs must read as one tree from the trigger down (`mainspring runs trace`).
    """
    attributes = messaging_attributes("process", subject, headers, body_size)
    with _active.tracer.start_as_current_span(
        f"process {destination_template(subject)}",
        context=extract(headers),
        kind=SpanKind.CONSUMER,
        attributes=attributes,
    ) as span:
        yield span


@contextmanager
def handling_batch(messages: Sequence[tuple[str, Mapping[str, Any] | None, int]]) -> Iterator[None]:
    """One `process` span per message of a batch (subject, headers, body size), all open while
    the batch is handled: each is the child of its own message's creation context, as in
    `handling`, so every chain's tree shows where its events were recorded."""
    opened = [
        _active.tracer.start_span(
            f"process {destination_template(subject)}",
            context=extract(headers),
            kind=SpanKind.CONSUMER,
            attributes={
                **messaging_attributes("process", subject, headers, size),
                "messaging.batch.message_count": len(messages),
            },
        )
        for subject, headers, size in messages
    ]
    try:
        yield
    finally:
        for one in opened:
            one.end()


@contextmanager
def sending(
    subject: str, headers: Mapping[str, Any] | None, body_size: int | None
) -> Iterator[None]:
    """A `send` span around one publish; its context is what the message carries."""
    with _active.tracer.start_as_current_span(
        f"send {destination_template(subject)}",
        kind=SpanKind.PRODUCER,
        attributes=messaging_attributes("send", subject, headers, body_size),
    ):
        yield


@contextmanager
def span(name: str, attributes: Mapping[str, Any] | None = None) -> Iterator[trace.Span]:
    """An internal span of Mainspring's own work (a run's execution, setup, run, cleanup)."""
    with _active.tracer.start_as_current_span(name, attributes=dict(attributes or {})) as opened:
        yield opened


@contextmanager
def continuing(traceparent: str | None) -> Iterator[None]:
    """Make a `traceparent` handed over from another process the current context."""
    token = context.attach(extract({TRACEPARENT: traceparent} if traceparent else {}))
    try:
        yield
    finally:
        context.detach(token)


# ---------------------------------------------------------------- sampling


class TokenBucket:
    """At most `rate` admissions a second on average, `burst` at once (the clock is passed in)."""

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate < 0 or burst < 1:
            raise TracingConfigError(
                f"a trace rate limit needs rate >= 0 and burst >= 1 (got {rate}, {burst}): "
                "set OTEL_TRACES_SAMPLER_ARG to the traces per second to keep"
            )
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.last = now

    def admit(self, now: float) -> bool:
        """Take one token if there is one."""
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class RateLimitedSampler(Sampler):
    """Samples new traces up to a rate per second per process; the rest are dropped whole."""

    def __init__(self, per_second: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._bucket = TokenBucket(per_second, max(1.0, per_second), clock())
        self._lock = threading.Lock()
        self._per_second = per_second

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: Any = None,
    ) -> SamplingResult:
        """Record and sample while the bucket has a token."""
        with self._lock:
            admitted = self._bucket.admit(self._clock())
        return SamplingResult(Decision.RECORD_AND_SAMPLE if admitted else Decision.DROP)

    def get_description(self) -> str:
        """Shown by the SDK in debug output."""
        return f"RateLimitedSampler{{{self._per_second:g}/s}}"


DEFAULT_TRACES_PER_SECOND = 10.0
RATE_LIMITED = "parentbased_ratelimited"


def sampler_from_env(environ: Mapping[str, str]) -> Sampler | None:
    """Mainspring's default sampler, or None to let the SDK read `OTEL_TRACES_SAMPLER` itself.

    The default keeps whole chains: a trace started sampled stays sampled in every service
    (parent-based), and new traces are sampled up to OTEL_TRACES_SAMPLER_ARG a second.
    """
    name = environ.get("OTEL_TRACES_SAMPLER", "").strip().lower()
    if name not in ("", RATE_LIMITED):
        return None
    raw = environ.get("OTEL_TRACES_SAMPLER_ARG", "").strip() if name else ""
    try:
        rate = float(raw) if raw else DEFAULT_TRACES_PER_SECOND
    except ValueError:
        raise TracingConfigError(
            f"OTEL_TRACES_SAMPLER_ARG={raw!r} is not a number: give the traces per second "
            f"to keep with {RATE_LIMITED}, e.g. 10"
        ) from None
    return ParentBased(RateLimitedSampler(rate))


def _default_sampler() -> Sampler | None:
    # A process that never configures tracing (a client submitting runs) still decides for
    # the traces it starts, so an SDK caller cannot make every chain sampled.
    try:
        return sampler_from_env(os.environ)
    except TracingConfigError:
        return ParentBased(RateLimitedSampler(DEFAULT_TRACES_PER_SECOND))


# A provider of our own with no span processor: ids, sampling decisions and propagation.
_active = _Active(TracerProvider(sampler=_default_sampler(), shutdown_on_exit=False))


# ---------------------------------------------------------------- export

EXPORTERS = ("otlp", "console", "none")


def exporter_names(environ: Mapping[str, str]) -> list[str]:
    """The exporters OTEL_TRACES_EXPORTER asks for (comma-separated).

    Unset means otlp only when an OTLP endpoint is set: a service with nowhere to send spans
    should not log an export failure every few seconds.
    """
    raw = environ.get("OTEL_TRACES_EXPORTER", "").strip()
    if not raw:
        endpoint = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
        )
        return ["otlp"] if endpoint else []
    names = [n.strip().lower() for n in raw.split(",") if n.strip()]
    unknown = [n for n in names if n not in EXPORTERS]
    if unknown:
        raise TracingConfigError(
            f"OTEL_TRACES_EXPORTER={raw!r}: {unknown[0]!r} is not an exporter Mainspring has; "
            "use otlp, console or none"
        )
    return [n for n in names if n != "none"]


def otlp_exporter(environ: Mapping[str, str]) -> SpanExporter | None:
    """The OTLP/HTTP exporter (it reads the OTEL_EXPORTER_OTLP_* variables), or None."""
    protocol = environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
    )
    if protocol != "http/protobuf":
        raise TracingConfigError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: Mainspring exports OTLP over "
            "http/protobuf only; unset it and point OTEL_EXPORTER_OTLP_ENDPOINT at port 4318"
        )
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError:
        log.warning(
            "OTEL_TRACES_EXPORTER=otlp, but opentelemetry-exporter-otlp-proto-http is not "
            "installed: `pip install opentelemetry-exporter-otlp-proto-http`; no spans go over OTLP"
        )
        return None
    return OTLPSpanExporter()


def configure_tracing(
    service: str,
    trace_dir: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> None:
    """Export this process's spans as the OTEL_* variables say, plus to files in trace_dir."""
    env = os.environ if environ is None else environ
    names = exporter_names(env)
    exporters: list[SpanExporter] = []
    if "otlp" in names:
        found = otlp_exporter(env)
        if found is not None:
            exporters.append(found)
    if "console" in names:
        exporters.append(ConsoleSpanExporter())
    if trace_dir is not None:
        exporters.append(SpanFileExporter(trace_dir / f"{service}-{os.getpid()}.jsonl"))
    resource = Resource.create(
        {"service.name": env.get("OTEL_SERVICE_NAME") or f"mainspring-{service}"}
    )
    provider = TracerProvider(resource=resource, sampler=sampler_from_env(env))
    processors: list[SpanProcessor] = [BatchSpanProcessor(e) for e in exporters]
    for processor in processors:
        provider.add_span_processor(processor)
    _install(provider, processors)


def configure_worker_tracing(collector: SpanCollector, service: str) -> None:
    """A routine's worker: spans follow the runner's decision and go back over the pipe.

    Its root sampler is off: a run handed over without a sampled `traceparent` has no spans.
    """
    provider = TracerProvider(
        resource=Resource.create({"service.name": f"mainspring-{service}"}),
        sampler=ParentBased(ALWAYS_OFF),
        shutdown_on_exit=False,
    )
    provider.add_span_processor(collector)
    _install(provider, [])


def _install(provider: TracerProvider, processors: list[SpanProcessor]) -> None:
    global _active
    _active = _Active(provider, processors)
    # User code's `trace.get_tracer(...)` (and Routine.span) reach the same provider.
    trace.set_tracer_provider(provider)


def shutdown_tracing() -> None:
    """Flush what is waiting to be exported (at a service's shutdown)."""
    _active.provider.force_flush(5_000)


# ---------------------------------------------------------------- spans as JSON records


def span_record(finished: ReadableSpan) -> dict[str, Any]:
    """One finished span as a JSON-ready dict (the file exporter's line, the worker's report)."""
    found = finished.context
    parent = finished.parent
    status = finished.status
    resource = finished.resource.attributes if finished.resource else {}
    return {
        "name": finished.name,
        "trace_id": format(found.trace_id, "032x") if found else None,
        "span_id": format(found.span_id, "016x") if found else None,
        "parent_id": format(parent.span_id, "016x") if parent else None,
        "kind": finished.kind.name,
        "start_ns": finished.start_time,
        "end_ns": finished.end_time,
        "service": resource.get("service.name"),
        "status": status.status_code.name,
        "status_message": status.description,
        "attributes": dict(finished.attributes or {}),
    }


def span_from_record(record: Mapping[str, Any], resource: Resource) -> ReadableSpan:
    """A span another process finished (a routine's worker), to export with this one's."""
    flags = TraceFlags(TraceFlags.SAMPLED)
    trace_id = int(record["trace_id"], 16)
    parent_id = record.get("parent_id")
    return ReadableSpan(
        name=str(record["name"]),
        context=SpanContext(trace_id, int(record["span_id"], 16), False, flags),
        parent=SpanContext(trace_id, int(parent_id, 16), True, flags) if parent_id else None,
        resource=resource,
        attributes=dict(record.get("attributes") or {}),
        kind=SpanKind[str(record.get("kind") or "INTERNAL")],
        status=Status(
            StatusCode[str(record.get("status") or "UNSET")], record.get("status_message")
        ),
        start_time=int(record["start_ns"]),
        end_time=int(record["end_ns"]),
    )


def export_records(records: Sequence[Mapping[str, Any]] | None) -> None:
    """Export spans a worker sent back, through this process's exporters."""
    if not records or not _active.processors:
        return
    resource = _active.provider.resource
    for record in records:
        try:
            finished = span_from_record(record, resource)
        except (KeyError, ValueError, TypeError):
            continue  # a malformed record from user-controlled code is not worth a run
        for processor in _active.processors:
            processor.on_end(finished)


class SpanCollector(SpanProcessor):
    """Keeps a worker's finished spans until the run's result carries them to the runner."""

    def __init__(self) -> None:
        self._finished: list[dict[str, Any]] = []

    def on_end(self, span: ReadableSpan) -> None:
        """Keep a sampled span."""
        if span.context is not None and span.context.trace_flags.sampled:
            self._finished.append(span_record(span))

    def drain(self) -> list[dict[str, Any]]:
        """The spans kept so far; forgets them."""
        taken, self._finished = self._finished, []
        return taken


class SpanFileExporter(SpanExporter):
    """Appends spans as JSON lines to one file, keeping about the last `max_bytes` of them.

    When the file grows past max_bytes it becomes `<name>.1` (replacing the older one), so a
    home holds the recent spans of each process and never grows without bound.
    """

    def __init__(self, path: Path, max_bytes: int = 8 * 1024 * 1024) -> None:
        self.path = path
        self.max_bytes = max_bytes
        path.parent.mkdir(parents=True, exist_ok=True)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Append one line per span."""
        lines = "".join(json.dumps(span_record(s), default=str) + "\n" for s in spans)
        try:
            if self.path.exists() and self.path.stat().st_size > self.max_bytes:
                self.path.replace(self.path.with_name(self.path.name + ".1"))
            with self.path.open("a") as out:
                out.write(lines)
        except OSError:
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        """Nothing held open."""


def read_span_files(trace_dir: Path, trace_id: str) -> list[dict[str, Any]]:
    """Every stored span of one trace, from the files of every process under trace_dir."""
    found: dict[str, dict[str, Any]] = {}
    if not trace_dir.is_dir():
        return []
    for path in sorted(trace_dir.glob("*.jsonl*")):
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            if trace_id not in line:
                continue  # cheap pre-filter: most lines belong to other traces
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line cut by a process killed mid-write
            if record.get("trace_id") == trace_id and record.get("span_id"):
                found[record["span_id"]] = record
    return sorted(found.values(), key=lambda r: int(r.get("start_ns") or 0))


def span_tree(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The spans of one trace in tree order (each parent before its children, siblings by
    start), each with its depth, service, start offset and duration in milliseconds.

    A span whose parent is not stored (sampled out of the file, or older than it keeps) is
    placed as a root, so nothing stored is hidden.
    """
    by_id = {str(r["span_id"]): r for r in records}
    children: dict[str | None, list[Mapping[str, Any]]] = {}
    for record in records:
        parent = record.get("parent_id")
        key = parent if parent in by_id else None
        children.setdefault(key, []).append(record)
    for siblings in children.values():
        siblings.sort(key=lambda r: int(r.get("start_ns") or 0))
    start = min((int(r.get("start_ns") or 0) for r in records), default=0)
    rows: list[dict[str, Any]] = []

    def walk(record: Mapping[str, Any], depth: int) -> None:
        began = int(record.get("start_ns") or 0)
        rows.append(
            {
                "name": record["name"],
                "depth": depth,
                "service": str(record.get("service") or "").removeprefix("mainspring-"),
                "offset_ms": (began - start) / 1e6,
                "duration_ms": (int(record.get("end_ns") or 0) - began) / 1e6,
                "error": record.get("status") == "ERROR",
            }
        )
        for child in children.get(str(record["span_id"]), []):
            walk(child, depth + 1)

    for root in children.get(None, []):
        walk(root, 0)
    return rows


def span_tree_lines(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """The spans of one trace as an indented tree with durations (`mainspring runs trace`)."""
    return [
        f"{'  ' * row['depth']}{row['name']}  [{row['service']}]  +{row['offset_ms']:.1f} ms  "
        f"{row['duration_ms']:.1f} ms{' ERROR' if row['error'] else ''}"
        for row in span_tree(records)
    ]
