"""Named trigger wiring on FastStream's TestNatsBroker: a push on trigger.fire becomes a run
request of the target with the payload as inputs, and the trigger's last run is kept."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from faststream.nats import NatsBroker, TestNatsBroker

from mainspring.base.settings import Settings
from mainspring.contract import subjects
from mainspring.contract.messages import FireTrigger, RequestRun
from mainspring.runtime.service import STREAM
from mainspring.storage.named_triggers import NamedTrigger, new_trigger
from mainspring.storage.registry import RoutineCatalog
from mainspring_services.dispatcher.handlers import Dispatcher
from mainspring_services.dispatcher.named_handlers import register_named
from tests.contract.test_handler_wiring import CountingNumbers, OneRoutineStore

NOW = datetime(2026, 5, 1, 12, tzinfo=UTC)


class OneTriggerStore:
    """The triggers bucket reduced to one active push trigger of `hello`."""

    def __init__(self) -> None:
        trigger = new_trigger("kick", "hello", NOW, push=True, payload={"steps": 2})
        self.trigger = trigger.model_copy(update={"status": "active"})
        self.runs: list[tuple[str, str]] = []

    async def find(self, name: str) -> NamedTrigger | None:
        return self.trigger if name == self.trigger.name else None

    async def record_run(self, name: str, run_id: str, at: datetime) -> None:
        self.runs.append((name, run_id))


async def test_a_push_becomes_a_run_request_with_its_payload_as_inputs() -> None:
    broker = NatsBroker()
    store = OneTriggerStore()
    # The Dispatcher's parts are concrete classes, not Protocols yet: the fakes fit by shape.
    routines, numbers = OneRoutineStore(), CountingNumbers()
    dispatcher = Dispatcher(broker, routines, RoutineCatalog(), numbers, Settings())  # type: ignore[arg-type]
    dispatcher.triggers = store  # type: ignore[assignment]
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
