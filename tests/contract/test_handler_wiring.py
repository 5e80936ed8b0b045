"""Handler wiring checked on FastStream's TestNatsBroker (no acks, redelivery or dedup here)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from faststream.nats import NatsBroker, NatsMessage, TestNatsBroker

from mainspring.base.settings import Settings
from mainspring.contract import subjects
from mainspring.contract.messages import RequestRun, RunCompleted, SubmitRun
from mainspring.runtime.service import STREAM
from mainspring.sdk.triggers import ScheduleTrigger
from mainspring.storage.registry import InputSchema, RoutineCatalog, RoutineDefinition
from mainspring_services.dispatcher.dispatch import Dispatcher
from mainspring_services.dispatcher.handlers import register as register_dispatcher
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
        broker, fakes.dispatcher_parts(DEFINITION), RoutineCatalog(), Settings()
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
