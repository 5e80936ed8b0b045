"""Handler wiring checked on FastStream's TestNatsBroker (no acks, redelivery or dedup here)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from faststream.nats import NatsBroker, NatsMessage, TestNatsBroker

from mainspring.base.settings import Settings
from mainspring.contract import subjects
from mainspring.contract.messages import RequestRun, RunCompleted, SubmitRun
from mainspring.runtime.service import STREAM, MessageTooLarge, build_broker, subscriber
from mainspring.sdk.triggers import ScheduleTrigger
from mainspring.storage.registry import InputSchema, RoutineCatalog, RoutineDefinition
from mainspring_services.dispatcher.dispatch import Dispatcher
from mainspring_services.dispatcher.handlers import register as register_dispatcher
from mainspring_services.dispatcher.settings import DispatcherSettings
from tests.contract import fakes

NOW = datetime(2026, 5, 1, 12, tzinfo=UTC)
DEFINITION = RoutineDefinition(
    name="hello",
    version="d1",
    entrypoint="hello.py:Hello",
    class_name="Hello",
    trigger_param="tick",
    trigger=ScheduleTrigger(every="1m"),
    inputs={"steps": InputSchema(type="int", default=3)},
    created_at=NOW,
    updated_at=NOW,
)


def _dispatcher_broker() -> NatsBroker:
    broker = NatsBroker()
    dispatcher = Dispatcher(
        broker, fakes.dispatcher_parts(DEFINITION), RoutineCatalog(), DispatcherSettings()
    )
    register_dispatcher(broker, dispatcher)
    return broker


async def test_manual_request_becomes_a_numbered_run_request() -> None:
    broker = _dispatcher_broker()
    seen: list[dict[str, Any]] = []

    @broker.subscriber(subjects.RUN_REQUESTED, stream=STREAM)
    async def capture(body: dict[str, Any]) -> None:
        seen.append(body)

    async with TestNatsBroker(broker) as test_broker:
        submit = SubmitRun(request_id="r-1", routine="hello", inputs={"steps": "5"}, labels=["x"])
        await test_broker.publish(submit.model_dump_json().encode(), subjects.RUN_SUBMITTED)

    request = RequestRun.model_validate(seen[0])
    assert (request.run_id, request.run_number, request.inputs, request.labels) == (
        "r-1",
        1,
        {"steps": 5},
        ["x"],
    )


async def test_bad_input_is_refused_as_a_failed_run() -> None:
    broker = _dispatcher_broker()
    completed: list[dict[str, Any]] = []

    @broker.subscriber(subjects.RUN_COMPLETED_ANY, stream=STREAM)
    async def capture(body: dict[str, Any], message: NatsMessage) -> None:
        assert message.raw_message.subject == "run.completed.hello.failed"
        completed.append(body)

    async with TestNatsBroker(broker) as test_broker:
        submit = SubmitRun(request_id="r-2", routine="hello", inputs={"steps": "many"})
        await test_broker.publish(submit.model_dump_json().encode(), subjects.RUN_SUBMITTED)

    refused = RunCompleted.model_validate(completed[0])
    assert refused.status == "failed"
    assert refused.error is not None
    assert "input 'steps'" in refused.error


async def test_malformed_message_goes_to_dead_letter() -> None:
    broker = _dispatcher_broker()
    parked: list[dict[str, Any]] = []

    @broker.subscriber(subjects.dead_letter_subject(subjects.RUN_SUBMITTED), stream=STREAM)
    async def capture(body: dict[str, Any]) -> None:
        parked.append(body)

    async with TestNatsBroker(broker) as test_broker:
        await test_broker.publish(b'{"routine": 5}', subjects.RUN_SUBMITTED)

    assert parked == [{"routine": 5}]


async def test_a_body_nested_too_deep_for_json_is_parked_not_failed() -> None:
    broker = _dispatcher_broker()
    parked: list[bytes] = []

    @subscriber(broker, subjects.dead_letter_subject(subjects.RUN_SUBMITTED), stream=STREAM)
    async def capture(message: NatsMessage) -> None:
        parked.append(message.body)

    # Deeper than Python's recursion limit: decoding it as JSON before the handler would
    # raise RecursionError, and the message would be retried instead of parked at once.
    deep = b"[" * 5000 + b"]" * 5000
    async with TestNatsBroker(broker) as test_broker:
        await test_broker.publish(deep, subjects.RUN_SUBMITTED)

    assert parked == [deep]


async def test_a_message_the_server_would_refuse_is_not_sent() -> None:
    broker = build_broker(Settings(nats_url="nats://127.0.0.1:4222"), "dispatcher")

    async with TestNatsBroker(broker) as test_broker:
        with pytest.raises(MessageTooLarge, match="a name in it is too long"):
            await test_broker.publish(b"{}", "run.completed." + "r" * 4000 + ".failed")
        with pytest.raises(MessageTooLarge, match="max payload of 1048576 bytes"):
            await test_broker.publish(b"x" * 1024 * 1024, subjects.RUN_SUBMITTED)
