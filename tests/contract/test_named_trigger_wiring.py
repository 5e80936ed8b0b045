"""Named trigger wiring on FastStream's TestNatsBroker: a push on trigger.fire becomes a run
request of the target with the payload as inputs, and the trigger's last run is kept."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from faststream.nats import NatsBroker, TestNatsBroker

from mainspring.contract import subjects
from mainspring.contract.messages import FireTrigger, RequestRun
from mainspring.runtime.service import STREAM
from mainspring.storage.named_triggers import new_trigger
from mainspring.storage.registry import RoutineCatalog
from mainspring_services.dispatcher.dispatch import Dispatcher
from mainspring_services.dispatcher.handlers import register_named
from mainspring_services.dispatcher.settings import DispatcherSettings
from tests.contract import fakes
from tests.contract.test_handler_wiring import DEFINITION

NOW = datetime(2026, 5, 1, 12, tzinfo=UTC)


async def test_a_push_becomes_a_run_request_with_its_payload_as_inputs() -> None:
    broker = NatsBroker()
    trigger = new_trigger("kick", "hello", NOW, push=True, payload={"steps": 2})
    store = fakes.Triggers(trigger.model_copy(update={"status": "active"}))
    parts = fakes.dispatcher_parts(DEFINITION, triggers=store)
    dispatcher = Dispatcher(broker, parts, RoutineCatalog(), DispatcherSettings())
    register_named(broker, dispatcher)
    seen: list[dict[str, Any]] = []

    @broker.subscriber(subjects.RUN_REQUESTED, stream=STREAM)
    async def capture(body: dict[str, Any]) -> None:
        seen.append(body)

    async with TestNatsBroker(broker) as test_broker:
        for request_id, payload in (("f-1", None), ("f-2", {"steps": "7"})):
            fire = FireTrigger(
                request_id=request_id, trigger="kick", payload=payload, requested_at=NOW
            )
            await test_broker.publish(fire.model_dump_json().encode(), subjects.TRIGGER_FIRE)

    requests = [RequestRun.model_validate(body) for body in seen]
    assert [(r.run_id, r.inputs, r.source) for r in requests] == [
        ("f-1", {"steps": 2}, "trigger"),
        ("f-2", {"steps": 7}, "trigger"),
    ]
    assert store.runs == [("kick", "f-1"), ("kick", "f-2")]
