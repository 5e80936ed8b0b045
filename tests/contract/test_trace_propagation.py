"""The broker middleware carries one trace through a handler that publishes (wiring check)."""

from __future__ import annotations

from typing import Any

from faststream.nats import NatsBroker, NatsMessage, TestNatsBroker

from mainspring.base import tracing
from mainspring.runtime.service import TraceContextMiddleware

PARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


async def test_a_handler_publishes_in_the_trace_of_the_message_it_handles() -> None:
    broker = NatsBroker(middlewares=[TraceContextMiddleware])
    seen: dict[str, Any] = {}

    @broker.subscriber("run.completed")
    async def on_completed(message: NatsMessage) -> None:
        seen["while_handling"] = tracing.current_trace_id()
        await broker.publish(b"{}", "run.requested")

    @broker.subscriber("run.requested")
    async def on_requested(message: NatsMessage) -> None:
        seen["downstream_headers"] = dict(message.headers)

    async with TestNatsBroker(broker) as test_broker:
        await test_broker.publish(b"{}", "run.completed", headers={"traceparent": PARENT})

    assert seen["while_handling"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert tracing.trace_id_of(seen["downstream_headers"]) == seen["while_handling"]


async def test_a_publish_outside_any_handler_starts_a_trace() -> None:
    broker = NatsBroker(middlewares=[TraceContextMiddleware])
    seen: dict[str, Any] = {}

    @broker.subscriber("schedule.fired")
    async def on_fired(message: NatsMessage) -> None:
        seen["headers"] = dict(message.headers)

    async with TestNatsBroker(broker) as test_broker:
        await test_broker.publish(b"{}", "schedule.fired")

    assert tracing.trace_id_of(seen["headers"]) is not None
