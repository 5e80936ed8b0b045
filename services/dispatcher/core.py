"""Pure dispatch decisions: which runs an event starts, and what the trigger history says."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from mainspring.messages import (
    RequestRun,
    RunCompleted,
    RunSource,
    ScheduleFired,
    SubmitRun,
    TriggerKind,
    TriggerRecorded,
)
from mainspring.registry import RoutineDefinition
from mainspring.routine import InputError, validate_inputs
from mainspring.triggers import CompletionTrigger

_RUN_NAMESPACE = uuid.UUID("6f1c8f52-2a5e-4d7e-9a38-6f0d1d3b9c11")


def run_id_for(routine: str, event_key: str) -> str:
    """Runs decided from the same event get the same id, so redelivery cannot double them."""
    return str(uuid.uuid5(_RUN_NAMESPACE, f"{routine}\x00{event_key}"))


@dataclass(frozen=True)
class Decision:
    """What the handler must publish for one incoming event."""

    requests: list[RequestRun] = field(default_factory=list)
    history: list[TriggerRecorded] = field(default_factory=list)
    refused: list[RunCompleted] = field(default_factory=list)


@dataclass(frozen=True)
class RunDraft:
    """The event-specific part of a run request."""

    run_id: str
    source: RunSource
    trigger_kind: TriggerKind
    event: dict[str, Any]
    inputs: dict[str, Any] = field(default_factory=dict)
    labels: list[str] = field(default_factory=list)
    attributes: dict[str, Any] = field(default_factory=dict)
    name: str | None = None
    description: str | None = None
    started_by: str | None = None
    hop: int = 0
    parent_run_id: str | None = None
    memory_limit: int | None = None
    statistics: bool = False
    previews: bool = False
    store_artifacts: bool = True
    submitted_at: datetime | None = None


def build_request(definition: RoutineDefinition, draft: RunDraft, now: datetime) -> RequestRun:
    """A run request from a definition and the event-specific draft (run number assigned later)."""
    options = definition.options
    return RequestRun(
        run_id=draft.run_id,
        routine=definition.name,
        routine_version=definition.version,
        entrypoint=definition.entrypoint,
        run_number=0,
        source=draft.source,
        trigger_kind=draft.trigger_kind,
        event=draft.event,
        inputs=validate_inputs(definition.input_specs(), draft.inputs),
        labels=draft.labels,
        attributes=draft.attributes,
        name=draft.name,
        description=draft.description,
        started_by=draft.started_by,
        hop=draft.hop,
        parent_run_id=draft.parent_run_id,
        memory_limit=draft.memory_limit or options.memory_limit,
        timeout_s=options.timeout_s,
        statistics=draft.statistics,
        previews=draft.previews,
        store_artifacts=draft.store_artifacts,
        requested_at=now,
        submitted_at=draft.submitted_at,
        retries=options.retries,
        retry_backoff_s=options.retry_backoff_s,
        max_concurrent=options.max_concurrent,
    )


def refuse(run_id: str, routine: str, reason: str, now: datetime, hop: int = 0) -> RunCompleted:
    """A run that cannot start: recorded as failed with the reason."""
    return RunCompleted(
        run_id=run_id, routine=routine, status="failed", error=reason, finished_at=now, hop=hop
    )


def decide_manual(
    definition: RoutineDefinition | None, submitted: SubmitRun, now: datetime
) -> Decision:
    """A manual request starts one run, whatever the trigger's state; bad inputs refuse it."""
    if definition is None:
        reason = (
            f"routine {submitted.routine!r} is not registered: create it with "
            f"`mainspring routine create DIR --name {submitted.routine}`"
        )
        return Decision(refused=[refuse(submitted.request_id, submitted.routine, reason, now)])
    draft = RunDraft(
        run_id=submitted.request_id,
        source=submitted.source,
        trigger_kind="manual",
        event={"requested_by": submitted.started_by, "request_id": submitted.request_id},
        inputs=submitted.inputs,
        labels=submitted.labels,
        attributes=submitted.attributes,
        name=submitted.name,
        description=submitted.description,
        started_by=submitted.started_by,
        memory_limit=submitted.memory_limit,
        statistics=submitted.statistics,
        previews=submitted.previews,
        store_artifacts=submitted.store_artifacts,
        submitted_at=submitted.submitted_at,
    )
    try:
        return Decision(requests=[build_request(definition, draft, now)])
    except InputError as exc:
        return Decision(refused=[refuse(submitted.request_id, definition.name, str(exc), now)])


def decide_schedule(
    definition: RoutineDefinition | None, fired: ScheduleFired, now: datetime
) -> Decision:
    """A schedule tick starts one run of an enabled schedule routine."""
    key = f"schedule:{fired.scheduled_at.isoformat()}"
    if definition is None or definition.trigger.kind not in ("schedule", "poll"):
        return Decision()
    if not definition.enabled:
        return Decision(
            history=[
                _history(
                    definition,
                    "schedule",
                    key,
                    "skipped",
                    now,
                    reason=f"trigger disabled: {definition.disabled_reason or 'by user'}",
                    scheduled_at=fired.scheduled_at,
                )
            ]
        )
    run_id = run_id_for(definition.name, key)
    draft = RunDraft(
        run_id=run_id,
        source="trigger",
        trigger_kind="schedule",
        event={
            "scheduled_at": fired.scheduled_at.isoformat(),
            "fired_at": fired.fired_at.isoformat(),
        },
    )
    request = build_request(definition, draft, now)
    return Decision(
        requests=[request],
        history=[
            _history(
                definition,
                "schedule",
                key,
                "fired",
                now,
                run_id=run_id,
                scheduled_at=fired.scheduled_at,
            )
        ],
    )


def completion_matches(trigger: CompletionTrigger, completed: RunCompleted) -> bool:
    """Does a finished run fire this completion trigger?"""
    return trigger.routine == completed.routine and trigger.status in ("any", completed.status)


def decide_completion(
    definitions: list[RoutineDefinition], completed: RunCompleted, now: datetime, max_hops: int
) -> Decision:
    """Each enabled routine waiting on this completion starts one run, unless the chain is too long."""
    requests: list[RequestRun] = []
    history: list[TriggerRecorded] = []
    key = f"completion:{completed.run_id}"
    hop = completed.hop + 1
    for definition in definitions:
        trigger = definition.trigger
        if not isinstance(trigger, CompletionTrigger) or not completion_matches(trigger, completed):
            continue
        if not definition.enabled:
            history.append(
                _history(
                    definition,
                    "completion",
                    key,
                    "skipped",
                    now,
                    reason=f"trigger disabled: {definition.disabled_reason or 'by user'}",
                )
            )
            continue
        limit = definition.options.max_hops or max_hops
        if hop > limit:
            history.append(
                _history(
                    definition,
                    "completion",
                    key,
                    "loop_blocked",
                    now,
                    reason=f"hop {hop} exceeds max_hops {limit}: run {completed.run_id} of "
                    f"{completed.routine} is already {completed.hop} hops down its chain",
                )
            )
            continue
        run_id = run_id_for(definition.name, key)
        draft = RunDraft(
            run_id=run_id,
            source="trigger",
            trigger_kind="completion",
            event={
                "routine": completed.routine,
                "run_id": completed.run_id,
                "run_number": completed.run_number,
                "status": completed.status,
                "outputs": completed.outputs,
                "artifacts": [a.model_dump() for a in completed.artifacts],
            },
            hop=hop,
            parent_run_id=completed.run_id,
        )
        requests.append(build_request(definition, draft, now))
        history.append(_history(definition, "completion", key, "fired", now, run_id=run_id))
    return Decision(requests=requests, history=history)


def _history(
    definition: RoutineDefinition,
    kind: TriggerKind,
    key: str,
    status: Any,
    now: datetime,
    *,
    run_id: str | None = None,
    reason: str | None = None,
    scheduled_at: datetime | None = None,
) -> TriggerRecorded:
    return TriggerRecorded(
        routine=definition.name,
        kind=kind,
        status=status,
        event_key=key,
        fired_at=now,
        scheduled_at=scheduled_at,
        run_id=run_id,
        reason=reason,
    )
