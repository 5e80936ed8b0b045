"""Manual and in-memory runs: a person's or an API caller's request, its event and its checks."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mainspring.contract.messages import (
    TERMINAL_STATUSES,
    SubmitRun,
    TriggerKind,
)
from mainspring.sdk.routine import RUN_METHOD, InputError
from mainspring.sdk.triggers import (
    CompletionTrigger,
    DatasetAppendTrigger,
    ManualTrigger,
    PollTrigger,
)
from mainspring.storage.cursors import DatasetCursor
from mainspring.storage.registry import (
    RoutineDefinition,
    in_memory_refusal,
    unknown_method,
)
from mainspring_services.dispatcher.core import Decision, RunDraft, build_request, refuse


@dataclass(frozen=True)
class ManualContext:
    """What a manual run's event is built from, as the handler loaded it.

    `upstream` is the recorder's record of the completion run to hand over (None: none
    found); `upstream_problem` says why it could not be asked.
    """

    cursor: DatasetCursor | None = None
    upstream: dict[str, Any] | None = None
    upstream_problem: str | None = None


class ManualEventError(ValueError):
    """A manual run's event cannot be built; the message names the fix."""


def manual_event(
    definition: RoutineDefinition, submitted: SubmitRun, context: ManualContext, now: datetime
) -> tuple[TriggerKind, dict[str, Any]]:
    """The event a run started by hand gets: the one its trigger would deliver."""
    if submitted.trigger_kind is not None and submitted.event is not None:
        return submitted.trigger_kind, submitted.event
    trigger = definition.trigger
    _check_narrowing(definition, submitted)
    if isinstance(trigger, DatasetAppendTrigger):
        return "dataset", _manual_dataset_event(trigger, submitted, context.cursor)
    if isinstance(trigger, CompletionTrigger):
        return "completion", _manual_completion_event(definition.name, trigger, submitted, context)
    if isinstance(trigger, PollTrigger):
        return "poll", {"scheduled_at": now.isoformat(), "payload": submitted.payload or {}}
    if isinstance(trigger, ManualTrigger):
        return "manual", {
            "requested_by": submitted.started_by,
            "request_id": submitted.request_id,
            "payload": submitted.payload or {},
        }
    return "schedule", {"scheduled_at": now.isoformat(), "fired_at": now.isoformat()}


def _check_narrowing(definition: RoutineDefinition, submitted: SubmitRun) -> None:
    """Options that narrow another trigger's event are refused, not ignored."""
    kind = definition.trigger.kind
    given = {
        "dataset": ["--from-version"] * (submitted.from_version is not None)
        + ["--to-version"] * (submitted.to_version is not None),
        "completion": ["--upstream"] * (submitted.upstream_run_id is not None),
        "poll": ["--payload"] * (submitted.payload is not None),
    }
    for owner, options in given.items():
        # A manual trigger (a DAG's) takes --payload as its source nodes' inputs.
        if options and owner != kind and not (owner == "poll" and kind == "manual"):
            raise ManualEventError(
                f"{options[0]} applies to {owner} routines; {definition.name} has a {kind} "
                "trigger: leave it out"
            )


def _manual_dataset_event(
    trigger: DatasetAppendTrigger, submitted: SubmitRun, cursor: DatasetCursor | None
) -> dict[str, Any]:
    """The rows since the cursor up to the latest version seen, or the range asked for."""
    if cursor is not None and cursor.dataset != trigger.dataset:
        cursor = None  # the routine watched another dataset before; that cursor says nothing
    from_version = submitted.from_version
    to_version = submitted.to_version
    if cursor is None and (from_version is None or to_version is None):
        raise ManualEventError(
            f"no rows of dataset {trigger.dataset} have been seen yet: give the range with "
            "--from-version and --to-version"
        )
    if from_version is None:
        assert cursor is not None
        from_version = cursor.fired_version
    if to_version is None:
        assert cursor is not None
        to_version = cursor.seen_version
    if from_version > to_version:
        raise ManualEventError(
            f"versions ({from_version}, {to_version}] are an empty range: --from-version must "
            "not be above --to-version"
        )
    event: dict[str, Any] = {
        "dataset": trigger.dataset,
        "from_version": from_version,
        "to_version": to_version,
    }
    if cursor is not None and (from_version, to_version) == (
        cursor.fired_version,
        cursor.seen_version,
    ):
        # Counted from the announcements; another range is counted by the runner, which
        # reads the commit log (the dispatcher never reads datasets).
        event["added_records"] = cursor.pending_records
    if trigger.merge_inserts:
        event["merge_inserts"] = True
    return event


def _manual_completion_event(
    name: str, trigger: CompletionTrigger, submitted: SubmitRun, context: ManualContext
) -> dict[str, Any]:
    """The upstream run's completion event, as the trigger would have delivered it."""
    if context.upstream_problem is not None:
        raise ManualEventError(context.upstream_problem)
    upstream = context.upstream
    wanted = "" if trigger.status == "any" else f" {trigger.status}"
    if upstream is None:
        if submitted.upstream_run_id is not None:
            raise ManualEventError(
                f"run {submitted.upstream_run_id} is not recorded: pick one with "
                f"`mainspring runs list --routine {trigger.routine}`"
            )
        raise ManualEventError(
            f"no{wanted} run of {trigger.routine} has finished, so {name} has no upstream "
            "event: run it first or give --upstream RUN_ID"
        )
    if upstream["routine"] != trigger.routine:
        raise ManualEventError(
            f"run {upstream['id']} is of {upstream['routine']}, but {name} waits on "
            f"{trigger.routine}: give --upstream a run of {trigger.routine}"
        )
    if upstream["status"] not in TERMINAL_STATUSES:
        raise ManualEventError(
            f"run {upstream['id']} is still {upstream['status']}: wait for it to finish"
        )
    return {
        "routine": upstream["routine"],
        "run_id": upstream["id"],
        "run_number": upstream.get("run_number") or 0,
        "status": upstream["status"],
        "outputs": upstream.get("outputs") or {},
        "artifacts": upstream.get("artifacts") or [],
    }


def latest_upstream(
    runs: list[dict[str, Any]], trigger: CompletionTrigger
) -> dict[str, Any] | None:
    """The newest finished run (of runs listed newest first) whose completion fires `trigger`."""
    for run in runs:
        finished = run["status"] in TERMINAL_STATUSES
        if (
            finished
            and run["routine"] == trigger.routine
            and trigger.status in ("any", run["status"])
        ):
            return run
    return None


def decide_manual(
    definition: RoutineDefinition | None,
    submitted: SubmitRun,
    now: datetime,
    context: ManualContext | None = None,
) -> Decision:
    """A manual request starts one run with its trigger's event, whatever the trigger's state;
    bad inputs or an event that cannot be built refuse it."""
    if definition is None:
        reason = (
            f"routine {submitted.routine!r} is not registered: create it with "
            f"`mainspring routine create DIR --name {submitted.routine}`"
        )
        return Decision(refused=[refuse(submitted.request_id, submitted.routine, reason, now)])
    problem = unknown_method(definition, submitted.method)
    if problem is not None:
        return Decision(
            refused=[
                refuse(submitted.request_id, definition.name, problem, now, source=submitted.source)
            ]
        )
    trigger_kind: TriggerKind
    event: dict[str, Any]
    try:
        if submitted.method != RUN_METHOD:
            # Only run() takes a trigger's event; another method has its inputs alone.
            trigger_kind, event = "manual", {}
        else:
            trigger_kind, event = manual_event(
                definition, submitted, context or ManualContext(), now
            )
    except ManualEventError as exc:
        return Decision(
            refused=[
                refuse(
                    submitted.request_id, definition.name, str(exc), now, source=submitted.source
                )
            ]
        )
    inputs = submitted.inputs
    if trigger_kind == "poll" and submitted.event is None:
        # As a polled payload does: keys naming run() inputs become inputs (given ones win).
        payload = event["payload"]
        inputs = {**{k: v for k, v in payload.items() if k in definition.inputs}, **inputs}
    draft = RunDraft(
        run_id=submitted.request_id,
        source=submitted.source,
        trigger_kind=trigger_kind,
        event=event,
        inputs=inputs,
        labels=submitted.labels,
        attributes=submitted.attributes,
        name=submitted.name,
        description=submitted.description,
        started_by=submitted.started_by,
        options=submitted.options,
        submitted_at=submitted.submitted_at,
        rerun_of=submitted.rerun_of,
        invocation=submitted.invocation,
        method=submitted.method,
    )
    try:
        return Decision(requests=[build_request(definition, draft, now)])
    except InputError as exc:
        return Decision(
            refused=[
                refuse(
                    submitted.request_id, definition.name, str(exc), now, source=submitted.source
                )
            ]
        )


def decide_in_memory(
    definition: RoutineDefinition | None,
    submitted: SubmitRun,
    now: datetime,
    context: ManualContext | None = None,
) -> Decision:
    """An in-memory request is a manual one, refused unless the routine allows in-memory runs."""
    reason = None if definition is None else in_memory_refusal(definition, submitted.method)
    if definition is not None and reason is not None:
        return Decision(refused=[refuse(submitted.request_id, definition.name, reason, now)])
    return decide_manual(definition, submitted, now, context)
