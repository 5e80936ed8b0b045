"""Completion triggers: which routines a finished run (or an outside workflow) starts."""

from __future__ import annotations

from datetime import datetime

from mainspring.contract.messages import (
    RequestRun,
    RunCompleted,
    TriggerRecorded,
)
from mainspring.sdk.routine import InputError
from mainspring.sdk.triggers import (
    CompletionTrigger,
)
from mainspring.storage.registry import (
    RoutineDefinition,
)
from mainspring_services.dispatcher.core import (
    Decision,
    RunDraft,
    build_request,
    describe_chain,
    extend_chain,
    history_row,
    hop_limit,
    refuse,
    run_id_for,
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
    refused: list[RunCompleted] = []
    key = f"completion:{completed.run_id}"
    hop = completed.hop + 1
    chain = extend_chain(completed.chain, completed.routine, completed.run_id)
    for definition in definitions:
        trigger = definition.trigger
        if not isinstance(trigger, CompletionTrigger) or not completion_matches(trigger, completed):
            continue
        if not definition.enabled:
            history.append(
                history_row(
                    definition,
                    "completion",
                    key,
                    "skipped",
                    now,
                    reason=f"trigger disabled: {definition.disabled_reason or 'by user'}",
                )
            )
            continue
        limit = hop_limit(definition, max_hops)
        if hop > limit:
            history.append(
                history_row(
                    definition,
                    "completion",
                    key,
                    "loop_blocked",
                    now,
                    reason=f"hop {hop} exceeds max_hops {limit}: run {completed.run_id} of "
                    f"{completed.routine} is already {completed.hop} hops down its chain "
                    f"({describe_chain(chain)}); raise max_hops on the routine or "
                    "MAINSPRING_MAX_HOPS if the chain is meant to be this long",
                    chain=chain,
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
            chain=chain,
        )
        try:
            requests.append(build_request(definition, draft, now))
        except InputError as exc:
            # A run that cannot be built is a start failure: it counts toward the crash loop.
            refused.append(
                refuse(
                    run_id,
                    definition.name,
                    str(exc),
                    now,
                    hop,
                    source="trigger",
                    parent_run_id=completed.run_id,
                    chain=chain,
                )
            )
            history.append(
                history_row(
                    definition, "completion", key, "failed", now, run_id=run_id, reason=str(exc)
                )
            )
            continue
        history.append(
            history_row(definition, "completion", key, "fired", now, run_id=run_id, chain=chain)
        )
    return Decision(requests=requests, history=history, refused=refused)
