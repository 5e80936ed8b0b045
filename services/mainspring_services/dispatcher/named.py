"""Pure decisions for named triggers: which run a firing starts, and its history row.

Like core.py: no I/O, no clock. A firing (a tick, a poll result, a push) of an active
trigger starts one run of its target with the firing's payload as inputs, validated as a
manual run's inputs are; the target gets the event its own trigger would deliver.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mainspring.contract.messages import (
    FireTrigger,
    FiringStatus,
    PollCompleted,
    PollRequested,
    ScheduleFired,
    SubmitRun,
    TriggerKind,
    TriggerRecorded,
)
from mainspring.sdk.routine import InputError
from mainspring.storage.named_triggers import NamedTrigger
from mainspring.storage.registry import RoutineDefinition
from mainspring_services.dispatcher.core import (
    Decision,
    RunDraft,
    build_request,
    refuse,
    run_id_for,
)
from mainspring_services.dispatcher.manual import ManualContext, ManualEventError, manual_event
from mainspring_services.dispatcher.timed import one_line


@dataclass(frozen=True)
class Firing:
    """One firing of a named trigger, whatever fired it."""

    trigger: str
    kind: TriggerKind
    # Unique per firing: history rows and the run id derive from it.
    key: str
    run_id: str
    payload: dict[str, Any]
    scheduled_at: datetime | None = None
    requested_by: str | None = None


def tick_firing(trigger: NamedTrigger, fired: ScheduleFired) -> Firing:
    """A tick of a timed trigger without a poll function fires with the default payload."""
    key = f"schedule:{fired.scheduled_at.isoformat()}"
    return Firing(
        trigger.name,
        "schedule",
        key,
        run_id_for(f"trigger:{trigger.name}", key),
        trigger.payload,
        fired.scheduled_at,
    )


def poll_firing(trigger: NamedTrigger, polled: PollCompleted) -> Firing:
    """A poll function's result: its dict is the payload."""
    key = f"poll:{polled.scheduled_at.isoformat()}"
    return Firing(
        trigger.name,
        "poll",
        key,
        run_id_for(f"trigger:{trigger.name}", key),
        polled.payload or {},
        polled.scheduled_at,
    )


def push_firing(trigger: NamedTrigger, fire: FireTrigger) -> Firing:
    """A call to fire: the payload given, else the trigger's default (as in lythonic)."""
    return Firing(
        trigger.name,
        "manual",
        f"fire:{fire.request_id}",
        fire.request_id,
        trigger.payload if fire.payload is None else fire.payload,
        requested_by=fire.requested_by,
    )


def poll_request(
    trigger: NamedTrigger, definition: RoutineDefinition | None, fired: ScheduleFired
) -> PollRequested | None:
    """A tick of an active trigger with a poll function asks a runner to call it, in the
    target's code bundle (None: fire at once, or decide_firing records why not)."""
    if trigger.poll_fn is None or trigger.status != "active" or definition is None:
        return None
    return PollRequested(
        routine=definition.name,
        routine_version=definition.version,
        fn=trigger.poll_fn,
        scheduled_at=fired.scheduled_at,
        trigger=trigger.name,
    )


def submission(trigger: NamedTrigger, definition: RoutineDefinition, firing: Firing) -> SubmitRun:
    """The firing as a manual request of the target (what its event is built from)."""
    # A DAG has no run() inputs: its payload reaches its source nodes by name, as
    # `dag run --payload` sends it.
    is_dag = definition.kind == "dag"
    return SubmitRun(
        request_id=firing.run_id,
        routine=definition.name,
        inputs={} if is_dag else firing.payload,
        started_by=firing.requested_by,
        # A poll routine's event carries the payload, as its own poll trigger's does.
        payload=firing.payload if is_dag or definition.trigger.kind == "poll" else None,
    )


def record(
    trigger: NamedTrigger,
    firing: Firing,
    status: FiringStatus,
    now: datetime,
    *,
    run_id: str | None = None,
    reason: str | None = None,
) -> TriggerRecorded:
    """The history row of a firing (listed by `trigger events`)."""
    return TriggerRecorded(
        routine=trigger.target,
        kind=firing.kind,
        status=status,
        event_key=f"named:{trigger.name}:{firing.key}",
        fired_at=now,
        scheduled_at=firing.scheduled_at,
        run_id=run_id,
        reason=reason,
        trigger=trigger.name,
        payload=firing.payload,
    )


def decide_firing(
    trigger: NamedTrigger | None,
    definition: RoutineDefinition | None,
    firing: Firing,
    now: datetime,
    context: ManualContext | None = None,
) -> Decision:
    """An active trigger's firing starts one run of its target; otherwise history says why not."""
    if trigger is None:
        return Decision()  # deleted since: nothing fires, and no history names it
    if trigger.status != "active":
        why = trigger.disabled_reason or f"deactivated by {trigger.disabled_by or 'user'}"
        reason = f"trigger {trigger.name} is inactive ({why}): `mainspring trigger activate {trigger.name}`"
        return Decision(history=[record(trigger, firing, "skipped", now, reason=reason)])
    if definition is None:
        reason = (
            f"target {trigger.target!r} is not registered: register it, or delete the trigger "
            f"with `mainspring trigger delete {trigger.name}`"
        )
        return Decision(history=[record(trigger, firing, "failed", now, reason=reason)])
    submitted = submission(trigger, definition, firing)
    try:
        kind, event = manual_event(definition, submitted, context or ManualContext(), now)
        if kind == "schedule" and firing.scheduled_at is not None:
            event = {"scheduled_at": firing.scheduled_at.isoformat(), "fired_at": now.isoformat()}
        draft = RunDraft(
            run_id=firing.run_id,
            source="trigger",
            trigger_kind=kind,
            event=event,
            inputs=submitted.inputs,
            attributes={"trigger": trigger.name},
            started_by=firing.requested_by,
        )
        request = build_request(definition, draft, now)
    except (InputError, ManualEventError) as exc:
        reason = one_line(
            f"payload of trigger {trigger.name} does not fit {definition.name}: {exc}"
        )
        refused = refuse(firing.run_id, definition.name, reason, now, source="trigger")
        return Decision(
            history=[record(trigger, firing, "failed", now, run_id=firing.run_id, reason=reason)],
            refused=[refused],
        )
    fired = record(trigger, firing, "fired", now, run_id=firing.run_id)
    return Decision(requests=[request], history=[fired])


def decide_poll_result(
    trigger: NamedTrigger | None,
    definition: RoutineDefinition | None,
    polled: PollCompleted,
    now: datetime,
    context: ManualContext | None = None,
) -> Decision:
    """A dict fires with it as the payload; None skips; an error is a failed firing."""
    if trigger is None:
        return Decision()
    firing = poll_firing(trigger, polled)
    if trigger.status == "active" and polled.error is not None:
        return Decision(
            history=[record(trigger, firing, "failed", now, reason=one_line(polled.error))]
        )
    if trigger.status == "active" and polled.payload is None:
        return Decision(
            history=[record(trigger, firing, "skipped", now, reason="poll function returned None")]
        )
    return decide_firing(trigger, definition, firing, now, context)
