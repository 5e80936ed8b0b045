"""Trace export: names, sampling, exporter settings, span files and the printed tree."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Decision, ParentBased

from mainspring import on_schedule
from mainspring.base import tracing
from mainspring.runtime.invoke import invoke
from mainspring.sdk.routine import Routine, RunInfo

PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
UNSAMPLED = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"


@pytest.mark.parametrize(
    ("subject", "template"),
    [
        ("schedule.fired", "schedule.fired"),
        ("run.requested", "run.requested"),
        ("run.completed.extract.failed", "run.completed.*.*"),
        ("external.completed.etl.completed", "external.completed.*.*"),
        ("deadletter.run.requested", "deadletter.>"),
        ("_INBOX.abc123.def", "_INBOX.*"),
        ("run.completedness", "run.completedness"),
    ],
)
def test_destination_templates_leave_out_variable_tokens(subject: str, template: str) -> None:
    assert tracing.destination_template(subject) == template


def test_messaging_attributes_name_the_operation_and_hide_reply_inboxes() -> None:
    sent = tracing.messaging_attributes(
        "send", "run.completed.a.completed", {"Nats-Msg-Id": "completed:1"}, 10
    )
    reply = tracing.messaging_attributes("send", "_INBOX.x1y2", None, None)

    assert sent == {
        "messaging.system": "nats",
        "messaging.operation.type": "send",
        "messaging.operation.name": "publish",
        "messaging.destination.name": "run.completed.a.completed",
        "messaging.destination.template": "run.completed.*.*",
        "messaging.message.id": "completed:1",
        "messaging.message.body.size": 10,
    }
    assert reply["messaging.destination.name"] == "_INBOX.*"
    assert reply["messaging.destination.temporary"] is True


def test_a_token_bucket_admits_its_burst_then_its_rate() -> None:
    bucket = tracing.TokenBucket(rate=2.0, burst=2.0, now=0.0)

    admitted_at_once = [bucket.admit(0.0) for _ in range(3)]
    after_half_a_second = [bucket.admit(0.5), bucket.admit(0.5)]

    assert admitted_at_once == [True, True, False]
    assert after_half_a_second == [True, False]


def test_the_rate_limited_sampler_drops_new_traces_past_its_rate() -> None:
    now = [100.0]
    sampler = tracing.RateLimitedSampler(1.0, clock=lambda: now[0])

    decisions = [sampler.should_sample(None, 1, "send").decision for _ in range(2)]
    now[0] += 1.0
    later = sampler.should_sample(None, 1, "send").decision

    assert decisions == [Decision.RECORD_AND_SAMPLE, Decision.DROP]
    assert later == Decision.RECORD_AND_SAMPLE


@pytest.mark.parametrize(
    ("environ", "rate"),
    [
        ({}, tracing.DEFAULT_TRACES_PER_SECOND),
        ({"OTEL_TRACES_SAMPLER_ARG": "3"}, tracing.DEFAULT_TRACES_PER_SECOND),
        ({"OTEL_TRACES_SAMPLER": "parentbased_ratelimited", "OTEL_TRACES_SAMPLER_ARG": "3"}, 3.0),
        ({"OTEL_TRACES_SAMPLER": "parentbased_ratelimited"}, tracing.DEFAULT_TRACES_PER_SECOND),
    ],
)
def test_the_default_sampler_is_parent_based_with_a_rate_limit(
    environ: dict[str, str], rate: float
) -> None:
    sampler = tracing.sampler_from_env(environ)

    assert isinstance(sampler, ParentBased)
    assert f"RateLimitedSampler{{{rate:g}/s}}" in str(sampler.get_description())  # type: ignore[no-untyped-call]


def test_a_standard_sampler_setting_is_left_to_the_sdk() -> None:
    assert tracing.sampler_from_env({"OTEL_TRACES_SAMPLER": "always_on"}) is None


def test_a_rate_that_is_not_a_number_is_refused_naming_the_variable() -> None:
    with pytest.raises(tracing.TracingConfigError, match="OTEL_TRACES_SAMPLER_ARG='lots'"):
        tracing.sampler_from_env(
            {"OTEL_TRACES_SAMPLER": "parentbased_ratelimited", "OTEL_TRACES_SAMPLER_ARG": "lots"}
        )


@pytest.mark.parametrize(
    ("environ", "names"),
    [
        ({}, []),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, ["otlp"]),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, []),
        ({"OTEL_TRACES_EXPORTER": "console, OTLP"}, ["console", "otlp"]),
    ],
)
def test_exporters_follow_otel_traces_exporter(environ: dict[str, str], names: list[str]) -> None:
    assert tracing.exporter_names(environ) == names


def test_an_unknown_exporter_is_refused_with_the_ones_we_have() -> None:
    with pytest.raises(tracing.TracingConfigError, match="use otlp, console or none"):
        tracing.exporter_names({"OTEL_TRACES_EXPORTER": "zipkin"})


def test_otlp_over_grpc_is_refused_with_the_fix() -> None:
    with pytest.raises(tracing.TracingConfigError, match="port 4318"):
        tracing.otlp_exporter({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})


def parent_of(span: ReadableSpan) -> int:
    assert span.parent is not None, f"{span.name} has no parent"
    return span.parent.span_id


def id_of(span: ReadableSpan) -> int:
    assert span.context is not None
    return int(span.context.span_id)


@pytest.fixture
def exported() -> Iterator[InMemorySpanExporter]:
    """Spans of this process go to memory for the test, then back to ids only."""
    saved = tracing._active
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ParentBased(tracing.RateLimitedSampler(1000)))
    processor = SimpleSpanProcessor(exporter)
    provider.add_span_processor(processor)
    tracing._active = tracing._Active(provider, [processor])
    yield exporter
    tracing._active = saved


def test_a_handled_message_is_the_parent_of_what_its_handler_sends(
    exported: InMemorySpanExporter,
) -> None:
    with (
        tracing.handling({"traceparent": PARENT}, "run.completed.a.completed", 5),
        tracing.sending("run.requested", {}, 7),
    ):
        carried = tracing.inject({})

    sent, handled = exported.get_finished_spans()
    assert handled.name == "process run.completed.*.*"
    assert handled.parent is not None
    assert format(handled.parent.span_id, "016x") == "b7ad6b7169203331"
    assert sent.name == "send run.requested"
    assert parent_of(sent) == id_of(handled)
    assert carried["traceparent"].split("-")[2] == format(sent.context.span_id, "016x")


def test_an_unsampled_chain_stays_unsampled_and_exports_nothing(
    exported: InMemorySpanExporter,
) -> None:
    with tracing.handling({"traceparent": UNSAMPLED}, "schedule.fired"):
        carried = tracing.inject({})

    assert exported.get_finished_spans() == ()
    assert carried["traceparent"].endswith("-00")


def test_a_batch_gets_one_process_span_per_message_under_its_own_parent(
    exported: InMemorySpanExporter,
) -> None:
    other = "00-11111111111111111111111111111111-2222222222222222-01"
    with tracing.handling_batch(
        [("run.started", {"traceparent": PARENT}, 3), ("run.started", {"traceparent": other}, 4)]
    ):
        pass

    spans = exported.get_finished_spans()
    assert [s.name for s in spans] == ["process run.started"] * 2
    assert [format(s.context.trace_id, "032x")[:4] for s in spans if s.context] == ["0af7", "1111"]
    assert {s.attributes["messaging.batch.message_count"] for s in spans if s.attributes} == {2}


class Traced(Routine):
    def run(self, tick: Any = on_schedule(every="1h")) -> dict[str, int]:
        with self.span("load", rows=2):
            return {"rows": 2}


def test_a_run_has_setup_run_and_cleanup_spans_with_the_users_span_inside_run(
    exported: InMemorySpanExporter,
) -> None:
    info = RunInfo(id="r1", number=1, routine="traced", source="manual")
    with tracing.continuing(PARENT):
        result = invoke(Traced, {"tick": None}, _NoContext(), info, None)

    spans = {s.name: s for s in exported.get_finished_spans()}
    assert result["status"] == "completed"
    assert sorted(spans) == ["cleanup", "load", "run", "setup"]
    assert parent_of(spans["load"]) == id_of(spans["run"])
    assert spans["load"].attributes == {"rows": 2}
    parent_ids = {
        format(s.parent.span_id, "016x") for n, s in spans.items() if n != "load" and s.parent
    }
    assert parent_ids == {"b7ad6b7169203331"}


class _NoContext:
    def progress(self, fraction: float, message: str) -> None:
        pass

    def save_artifact(self, name: str, data: Any) -> str:
        return name


def test_span_records_round_trip_between_processes(exported: InMemorySpanExporter) -> None:
    collector = tracing.SpanCollector()
    with tracing.continuing(PARENT), tracing.span("run", {"k": "v"}):
        pass
    [finished] = exported.get_finished_spans()
    collector.on_end(finished)
    [record] = collector.drain()

    rebuilt = tracing.span_record(tracing.span_from_record(record, finished.resource))

    assert {k: v for k, v in rebuilt.items() if k != "service"} == {
        k: v for k, v in record.items() if k != "service"
    }
    assert record["parent_id"] == "b7ad6b7169203331"
    assert collector.drain() == []


def record(
    span_id: str, parent: str | None, name: str, start_ms: float, took_ms: float
) -> dict[str, Any]:
    return {
        "name": name,
        "trace_id": "ab" * 16,
        "span_id": span_id,
        "parent_id": parent,
        "service": "mainspring-runner",
        "start_ns": int(start_ms * 1e6),
        "end_ns": int((start_ms + took_ms) * 1e6),
        "status": "ERROR" if name == "run" else "UNSET",
    }


def test_the_tree_indents_children_and_shows_orphans_as_roots() -> None:
    spans = [
        record("1", None, "send schedule.fired", 0, 1),
        record("3", "2", "run", 5, 2),
        record("2", "1", "execute", 3, 5),
        record("9", "missing", "process run.started", 4, 1),
    ]

    assert tracing.span_tree_lines(spans) == [
        "send schedule.fired  [runner]  +0.0 ms  1.0 ms",
        "  execute  [runner]  +3.0 ms  5.0 ms",
        "    run  [runner]  +5.0 ms  2.0 ms ERROR",
        "process run.started  [runner]  +4.0 ms  1.0 ms",
    ]


def test_span_files_are_read_across_processes_skipping_cut_lines(tmp_path: Path) -> None:
    mine = record("1", None, "send", 0, 1)
    other = {**record("2", None, "send", 0, 1), "trace_id": "cd" * 16}
    (tmp_path / "ticker-1.jsonl").write_text(json.dumps(mine) + "\n" + json.dumps(other) + "\n")
    (tmp_path / "runner-2.jsonl.1").write_text(json.dumps(record("3", "1", "run", 1, 1)) + "\n")
    (tmp_path / "runner-2.jsonl").write_text('{"name": "cut", "trace_id": "' + "ab" * 16)

    found = tracing.read_span_files(tmp_path, "ab" * 16)

    assert [r["span_id"] for r in found] == ["1", "3"]


def test_the_span_file_rolls_over_past_its_size(
    tmp_path: Path, exported: InMemorySpanExporter
) -> None:
    with tracing.span("one"):
        pass
    [finished] = exported.get_finished_spans()
    path = tmp_path / "runner-1.jsonl"
    file_exporter = tracing.SpanFileExporter(path, max_bytes=10)

    file_exporter.export([finished])
    file_exporter.export([finished])

    assert len(path.read_text().splitlines()) == 1
    assert len((tmp_path / "runner-1.jsonl.1").read_text().splitlines()) == 1


def test_a_missing_otlp_package_is_one_warning_line_not_a_crash(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # None in sys.modules makes the import fail as if the package were not installed.
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.http.trace_exporter", None)

    with caplog.at_level(logging.WARNING, logger="mainspring"):
        found = tracing.otlp_exporter({})

    assert found is None
    [line] = caplog.messages
    assert "pip install opentelemetry-exporter-otlp-proto-http" in line
