"""Pure decisions for timed triggers: poll requests and results, and the overlap policy.

Like core.py: no I/O, no async, no clock; handlers pass `now` and the state snapshot.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from mainspring.contract.messages import (
    CancelRun,
    PollCompleted,
    PollRequested,
    RequestRun,
    RunCompleted,
    ScheduleFired,
    TriggerRecorded,
)
from mainspring.sdk.routine import InputError
from mainspring.sdk.triggers import Overlap, PollTrigger, TimedSpec
from mainspring.storage.registry import RoutineDefinition
from mainspring_services.dispatcher.core import (
    Decision,
    RunDraft,
    build_request,
    history_row,
    run_id_for,
)

MAX_REASON = 500


def one_line(text: str) -> str:
    """The first line of an error, bounded, for trigger history."""
    first = (text.strip().splitlines() or [""])[0]
    return first if len(first) <= MAX_REASON else first[: MAX_REASON - 1] + "…"


def poll_key(scheduled_at: datetime) -> str:
    """The trigger event key of a poll tick (history rows and run ids derive from it)."""
    return f"poll:{scheduled_at.isoformat()}"


def poll_request(
    definition: RoutineDefinition | None, fired: ScheduleFired
) -> PollRequested | None:
    """A poll routine's tick asks a runner to call its poll function (None: not a poll routine)."""
    if definition is None or not definition.enabled:
        return None
    trigger = definition.trigger
    if not isinstance(trigger, PollTrigger):
        return None
    return PollRequested(
        routine=definition.name,
        routine_version=definition.version,
        fn=trigger.fn,
        scheduled_at=fired.scheduled_at,
        timeout_s=trigger.timeout_s,
    )


def decide_poll_result(
    definition: RoutineDefinition | None, polled: PollCompleted, now: datetime
) -> Decision:
    """A dict payload starts a run (keys matching inputs become inputs); None skips; errors fail."""
    if definition is None or not isinstance(definition.trigger, PollTrigger):
        return Decision()
    key = poll_key(polled.scheduled_at)

    def record(status: str, reason: str) -> Decision:
        return Decision(
            history=[
                history_row(
                    definition,
                    "poll",
                    key,
                    status,
                    now,
                    reason=reason,
                    scheduled_at=polled.scheduled_at,
                )
            ]
        )

    if not definition.enabled:
        return record("skipped", f"trigger disabled: {definition.disabled_reason or 'by user'}")
    if polled.error is not None:
        return record("failed", one_line(polled.error))
    if polled.payload is None:
        return record("skipped", "poll function returned None")
    payload: dict[str, Any] = polled.payload
    run_id = run_id_for(definition.name, key)
    draft = RunDraft(
        run_id=run_id,
        source="trigger",
        trigger_kind="poll",
        event={"scheduled_at": polled.scheduled_at.isoformat(), "payload": payload},
        inputs={k: v for k, v in payload.items() if k in definition.inputs},
    )
    try:
        request = build_request(definition, draft, now)
    except InputError as exc:
        return record("failed", one_line(f"poll payload does not fit run(): {exc}"))
    fired = history_row(
        definition, "poll", key, "fired", now, run_id=run_id, scheduled_at=polled.scheduled_at
    )
    return Decision(requests=[request], history=[fired])


class PendingRun(BaseModel):
    """A run held back by overlap=buffer_one, with the history row it records when started."""

    model_config = ConfigDict(frozen=True)
    request: RequestRun
    history: list[TriggerRecorded]


class OverlapState(BaseModel):
    """Which trigger runs of a routine are active, and the one buffered tick."""

    model_config = ConfigDict(frozen=True)
    active: tuple[str, ...] = ()
    pending: PendingRun | None = None


def overlap_policy(definition: RoutineDefinition | None) -> Overlap:
    """The routine's overlap policy (only timed triggers have one)."""
    if definition is not None and isinstance(definition.trigger, TimedSpec):
        return definition.trigger.overlap
    return "allow"


def gate_run(
    policy: Overlap, state: OverlapState, decision: Decision, now: datetime
) -> tuple[Decision, OverlapState, list[CancelRun]]:
    """Apply the overlap policy to a decided timed run: start, skip, buffer, or cancel first.

    Returns what to publish, the new state and the runs to cancel before starting.
    A redelivered event whose run is already active (or buffered) changes nothing.
    """
    if not decision.requests or policy == "allow":
        return decision, state, []
    request = decision.requests[0]
    run_id = request.run_id
    if run_id in state.active:
        return decision, state, []  # redelivery: republish, deduplicated by message id
    if state.pending is not None and state.pending.request.run_id == run_id:
        return Decision(), state, []
    if not state.active:
        return decision, state.model_copy(update={"active": (run_id,)}), []
    running = state.active[-1]
    if policy == "cancel_previous":
        cancels = [
            CancelRun(run_id=active, requested_by=f"overlap=cancel_previous: run {run_id}")
            for active in state.active
        ]
        return decision, state.model_copy(update={"active": (run_id,)}), cancels
    if policy == "buffer_one" and state.pending is None:
        pending = PendingRun(request=request, history=decision.history)
        return Decision(), state.model_copy(update={"pending": pending}), []
    if policy == "buffer_one":
        reason = (
            f"run {running} is still active and run {state.pending.request.run_id if state.pending else '?'} "
            "is already buffered (overlap=buffer_one)"
        )
    else:
        reason = f"run {running} is still active (overlap=skip)"
    skipped = [
        h.model_copy(
            update={"status": "skipped", "run_id": None, "reason": reason, "fired_at": now}
        )
        for h in decision.history
    ]
    return Decision(history=skipped), state, []


def may_hold_a_slot(completed: RunCompleted) -> bool:
    """Could this run hold an overlap slot? Only triggered runs take one (a run started by
    hand or through the API never does), so their completions need no read of the state."""
    return completed.source in (None, "trigger")


def release_run(
    state: OverlapState, run_id: str, now: datetime, still_enabled: bool = True
) -> tuple[Decision, OverlapState]:
    """A run finished: free its slot and start the buffered tick, if any.

    A buffered tick of a routine disabled or deleted meanwhile is recorded as skipped.
    """
    if run_id not in state.active:
        return Decision(), state
    active = tuple(a for a in state.active if a != run_id)
    if active or state.pending is None:
        return Decision(), state.model_copy(update={"active": active})
    pending = state.pending
    if not still_enabled:
        reason = "trigger disabled before the buffered tick could start (overlap=buffer_one)"
        dropped = [
            h.model_copy(update={"status": "skipped", "run_id": None, "reason": reason})
            for h in pending.history
        ]
        return Decision(history=dropped), OverlapState()
    request = pending.request.model_copy(update={"requested_at": now})
    history = [h.model_copy(update={"fired_at": now}) for h in pending.history]
    started = OverlapState(active=(request.run_id,), pending=None)
    return Decision(requests=[request], history=history), started


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
                history_row(
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
            history_row(
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
