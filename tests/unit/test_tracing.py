"""W3C trace context helpers: a message continues the trace it came with, or starts one."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from mainspring.base import tracing
from mainspring.contract import subjects
from mainspring.contract.messages import RunCompleted, ScheduleFired
from mainspring.runtime import bus
from mainspring_services.ticker.settings import TickerSettings
from mainspring_services.ticker.timers import Ticker

PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_publishing_outside_a_trace_starts_a_new_one() -> None:
    first = tracing.inject({})
    second = tracing.inject({})

    assert tracing.trace_id_of(first) is not None
    assert tracing.trace_id_of(first) != tracing.trace_id_of(second)


def test_handling_a_message_continues_its_trace_in_what_it_publishes() -> None:
    with tracing.handling({"traceparent": PARENT}, "run.completed.a.completed"):
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
    with tracing.handling(headers, "schedule.fired"):
        current = tracing.current_trace_id()

    assert current is not None
    assert len(current) == 32
    assert tracing.trace_id_of(headers) is None


class RecordingStream:
    """Stands in for a JetStream context: keeps what was published and with which headers."""

    def __init__(self) -> None:
        self.published: list[tuple[str, dict[str, str]]] = []

    async def publish(
        self, subject: str, payload: bytes, stream: str | None = None, **options: Any
    ) -> None:
        self.published.append((subject, dict(options["headers"])))


async def test_ticks_carry_their_message_id_and_a_trace() -> None:
    js = RecordingStream()
    fired = ScheduleFired(
        routine="nightly",
        scheduled_at=datetime(2026, 11, 28, tzinfo=UTC),
        fired_at=datetime.now(UTC),
    )

    await Ticker(TickerSettings(), js=js).publish(fired)  # type: ignore[arg-type]

    [(subject, headers)] = js.published
    assert subject == subjects.SCHEDULE_FIRED
    assert headers["Nats-Msg-Id"] == fired.message_id()
    assert tracing.trace_id_of(headers) is not None


async def test_a_completion_published_from_the_sdk_continues_the_callers_trace() -> None:
    js = RecordingStream()
    completed = RunCompleted(run_id="r-1", routine="team/report", status="cancelled")

    with tracing.handling({"traceparent": PARENT}, "run.cancel"):
        await bus.publish(js, completed, completed.subject())  # type: ignore[arg-type]

    [(subject, headers)] = js.published
    assert subject == "run.completed.team_2freport.cancelled"
    assert headers["Nats-Msg-Id"] == "completed:r-1"
    assert tracing.trace_id_of(headers) == "0af7651916cd43dd8448eb211c80319c"
