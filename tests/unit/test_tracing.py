"""W3C trace context helpers: a message continues the trace it came with, or starts one."""

from __future__ import annotations

import pytest

from mainspring import tracing

PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_publishing_outside_a_trace_starts_a_new_one() -> None:
    first = tracing.inject({})
    second = tracing.inject({})

    assert tracing.trace_id_of(first) is not None
    assert tracing.trace_id_of(first) != tracing.trace_id_of(second)


def test_handling_a_message_continues_its_trace_in_what_it_publishes() -> None:
    with tracing.handling({"traceparent": PARENT}, "run.completed process"):
        published = tracing.inject({"Nats-Msg-Id": "run:1"})
        current = tracing.current_trace_id()

    assert current == "0af7651916cd43dd8448eb211c80319c"
    assert tracing.trace_id_of(published) == current
    assert published["traceparent"] != PARENT  # a new span of the same trace
    assert published["Nats-Msg-Id"] == "run:1"
    assert tracing.current_trace_id() is None


@pytest.mark.parametrize(
    "headers",
    [
        None,
        {},
        {"traceparent": "garbage"},
        {"traceparent": "00-" + "0" * 32 + "-" + "0" * 16 + "-01"},
    ],
)
def test_a_message_without_valid_context_is_handled_in_a_new_trace(
    headers: dict[str, str] | None,
) -> None:
    with tracing.handling(headers, "schedule.fired process"):
        current = tracing.current_trace_id()

    assert current is not None
    assert len(current) == 32
    assert tracing.trace_id_of(headers) is None
