"""Named triggers fired: load the trigger and its target, decide, publish.

The ticks of named triggers arrive on `schedule.fired` (with `trigger` set) and their poll
results on `poll.completed`; the existing consumers of those subjects hand them here.
Pushes arrive on `trigger.fire`. After a run is requested, the trigger's last run is
written (a redelivery requests the same run id again, which the stream drops, or the
fence leaves out beyond the stream's duplicate window).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

from mainspring.contract import subjects
from mainspring.contract.messages import FireTrigger, PollCompleted, ScheduleFired
from mainspring.runtime.service import publish_event
from mainspring.storage.named_triggers import NamedTrigger, deactivated
from mainspring.storage.registry import RoutineDefinition
from mainspring_services.dispatcher import named
from mainspring_services.dispatcher.core import Decision
from mainspring_services.dispatcher.fence import Delivery
from mainspring_services.dispatcher.ports import NamedTriggers

if TYPE_CHECKING:
    from mainspring_services.dispatcher.dispatch import Dispatcher

log = logging.getLogger("mainspring.dispatcher")


def _now() -> datetime:
    return datetime.now(UTC)


async def _load(
    dispatcher: Dispatcher, name: str
) -> tuple[NamedTriggers, NamedTrigger | None, RoutineDefinition | None]:
    store = dispatcher.triggers
    trigger = await store.find(name)
    definition = await dispatcher.store.find(trigger.target) if trigger is not None else None
    return store, trigger, definition


async def _fire(
    dispatcher: Dispatcher,
    store: NamedTriggers,
    trigger: NamedTrigger | None,
    definition: RoutineDefinition | None,
    firing: named.Firing,
    decide: Decision | None = None,
    delivery: Delivery | None = None,
) -> None:
    """Decide (with the context a dataset or completion target's event needs) and publish."""
    decision = decide
    if decision is None:
        context = None
        if trigger is not None and definition is not None and trigger.status == "active":
            context = await dispatcher.manual_context(
                definition, named.submission(trigger, definition, firing)
            )
        decision = named.decide_firing(trigger, definition, firing, _now(), context)
    await dispatcher.publish(decision, delivery=delivery)
    for request in decision.requests:
        assert trigger is not None
        await store.record_run(trigger.name, request.run_id, request.requested_at)


async def on_tick(
    dispatcher: Dispatcher, fired: ScheduleFired, delivery: Delivery | None = None
) -> None:
    """A named trigger's tick: ask for its poll, or fire it with the default payload."""
    assert fired.trigger is not None
    store, trigger, definition = await _load(dispatcher, fired.trigger)
    if trigger is None:
        log.info("tick of deleted trigger %s dropped", fired.trigger)
        return
    poll = named.poll_request(trigger, definition, fired)
    if poll is not None:
        await publish_event(dispatcher.broker, poll, subjects.POLL_REQUESTED)
        return
    firing = named.tick_firing(trigger, fired)
    await _fire(dispatcher, store, trigger, definition, firing, delivery=delivery)


async def on_polled(
    dispatcher: Dispatcher, polled: PollCompleted, delivery: Delivery | None = None
) -> None:
    """A named trigger's poll result: a run, or a history row saying why not."""
    assert polled.trigger is not None
    store, trigger, definition = await _load(dispatcher, polled.trigger)
    if trigger is None:
        return
    firing = named.poll_firing(trigger, polled)
    context = None
    if definition is not None and polled.payload is not None:
        context = await dispatcher.manual_context(
            definition, named.submission(trigger, definition, firing)
        )
    decision = named.decide_poll_result(trigger, definition, polled, _now(), context)
    await _fire(dispatcher, store, trigger, definition, firing, decision, delivery)


async def on_fire(
    dispatcher: Dispatcher, fire: FireTrigger, delivery: Delivery | None = None
) -> None:
    """A push: fire now with the payload given, else the trigger's default."""
    store, trigger, definition = await _load(dispatcher, fire.trigger)
    if trigger is None:
        log.warning("fire of unknown trigger %s dropped", fire.trigger)
        return
    firing = named.push_firing(trigger, fire)
    await _fire(dispatcher, store, trigger, definition, firing, delivery=delivery)


async def deactivate_targeting(
    dispatcher: Dispatcher,
    routine: str,
    reason: str,
    by: Literal["crash_loop", "circuit_breaker"] = "crash_loop",
) -> None:
    """Crash-loop protection and the circuit breaker switch off the routine's named triggers too."""
    store = dispatcher.triggers
    for trigger in await store.targeting(routine):
        if trigger.status == "active":
            await store.change(trigger.name, lambda t: deactivated(t, _now(), reason, by))
            log.warning("deactivated trigger %s of %s: %s", trigger.name, routine, reason)
