"""Pure dispatch decisions: which runs an event starts, and what the trigger history says."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from mainspring.contract.messages import (
    CHAIN_LIMIT,
    TERMINAL_STATUSES,
    DatasetAppended,
    ExecutionType,
    InvocationType,
    Isolation,
    RequestRun,
    RunCompleted,
    RunPhase,
    RunSource,
    ScheduleFired,
    SubmitRun,
    TriggerKind,
    TriggerRecorded,
)
from mainspring.sdk.routine import RUN_METHOD, InputError, validate_inputs
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
    method_input_specs,
    unknown_method,
)

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
    chain: list[str] = field(default_factory=list)
    submitted_at: datetime | None = None
    isolation: Isolation | None = None
    rerun_of: str | None = None
    execution: ExecutionType = "background"
    invocation: InvocationType = "direct"
    method: str = RUN_METHOD


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
        inputs=validate_inputs(method_input_specs(definition, draft.method), draft.inputs),
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
        chain=draft.chain,
        submitted_at=draft.submitted_at,
        retries=options.retries,
        retry_backoff_s=options.retry_backoff_s,
        max_concurrent=options.max_concurrent,
        isolation=draft.isolation or options.isolation,
        rerun_of=draft.rerun_of,
        execution=draft.execution,
        invocation=draft.invocation,
        method=draft.method,
        blueprint=definition.blueprint,
        configuration=definition.config,
        kind=definition.kind,
    )


def refuse(
    run_id: str,
    routine: str,
    reason: str,
    now: datetime,
    hop: int = 0,
    *,
    source: RunSource | None = None,
    parent_run_id: str | None = None,
    chain: list[str] | None = None,
    phase: RunPhase = "start",
) -> RunCompleted:
    """A run that cannot start: recorded as failed with the reason."""
    return RunCompleted(
        run_id=run_id,
        routine=routine,
        status="failed",
        error=reason,
        finished_at=now,
        hop=hop,
        source=source,
        parent_run_id=parent_run_id,
        chain=chain or [],
        phase=phase,
    )


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
        memory_limit=submitted.memory_limit,
        statistics=submitted.statistics,
        previews=submitted.previews,
        store_artifacts=submitted.store_artifacts,
        submitted_at=submitted.submitted_at,
        isolation=submitted.isolation,
        rerun_of=submitted.rerun_of,
        execution=submitted.execution,
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
        limit = hop_limit(definition, max_hops)
        if hop > limit:
            history.append(
                _history(
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
                _history(
                    definition, "completion", key, "failed", now, run_id=run_id, reason=str(exc)
                )
            )
            continue
        history.append(
            _history(definition, "completion", key, "fired", now, run_id=run_id, chain=chain)
        )
    return Decision(requests=requests, history=history, refused=refused)


def extend_chain(chain: list[str], routine: str, run_id: str) -> list[str]:
    """A downstream run's ancestry: its parent's chain plus the parent, newest CHAIN_LIMIT kept."""
    return [*chain, f"{routine}:{run_id}"][-CHAIN_LIMIT:]


def describe_chain(chain: list[str]) -> str:
    """A chain as `a:1f2e... -> b:9c3d...` with shortened run ids."""
    return " -> ".join(
        f"{routine}:{run_id[:8]}" for routine, _, run_id in (e.rpartition(":") for e in chain)
    )


def hop_limit(definition: RoutineDefinition, default: int) -> int:
    """The routine's own max_hops when it sets one (0 included), else the deployment's."""
    own = definition.options.max_hops
    return default if own is None else own


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
    chain: list[str] | None = None,
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
        chain=chain or [],
    )


# --- dataset appends ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetDecision:
    """For one routine and one append event: what to publish and the cursor to store after."""

    cursor: DatasetCursor | None
    requests: list[RequestRun] = field(default_factory=list)
    history: list[TriggerRecorded] = field(default_factory=list)


def dataset_routines(definitions: list[RoutineDefinition], dataset: str) -> list[RoutineDefinition]:
    """The routines whose trigger watches this dataset."""
    return sorted(
        (
            d
            for d in definitions
            if isinstance(d.trigger, DatasetAppendTrigger) and d.trigger.dataset == dataset
        ),
        key=lambda d: d.name,
    )


def threshold_shortfall(
    trigger: DatasetAppendTrigger, pending_records: int, base_records: int | None
) -> str | None:
    """Why the pending rows do not fire yet (None: every given threshold is met)."""
    if pending_records <= 0:
        return "no rows added"
    if trigger.batch_rows is not None and pending_records < trigger.batch_rows:
        return f"{pending_records} of batch_rows={trigger.batch_rows} rows accumulated"
    if trigger.added_fraction is not None and base_records:
        needed = trigger.added_fraction * base_records
        if pending_records < needed:
            return (
                f"{pending_records} rows are {pending_records / base_records:.1%} of "
                f"{base_records}, below added_fraction={trigger.added_fraction:g}"
            )
    return None


def cursor_starting_at(
    dataset: str, appended: DatasetAppended, table_id: str | None
) -> DatasetCursor:
    """A cursor that starts just before this announcement, with the table's earlier rows as base."""
    base = None
    if appended.table_records is not None:
        base = max(0, appended.table_records - appended.added_records)
    return DatasetCursor(
        dataset=dataset,
        fired_version=appended.from_version,
        seen_version=appended.from_version,
        base_records=base,
        table_id=table_id,
    )


def registered_cursor(definition: RoutineDefinition) -> DatasetCursor | None:
    """The cursor a dataset routine starts with: the dataset as `routine create` found it.

    The registration's snapshot keeps rows older than the routine from firing it. None
    without one (the dataset was out of the client's reach, or not created yet).
    """
    trigger = definition.trigger
    start = definition.dataset_start
    if not isinstance(trigger, DatasetAppendTrigger) or start is None:
        return None
    if start.dataset != trigger.dataset:
        return None  # registered for another dataset before; says nothing of this one
    return DatasetCursor(
        dataset=start.dataset,
        fired_version=start.version,
        seen_version=start.version,
        base_records=start.records,
        table_id=start.table_id,
    )


def first_cursor(definition: RoutineDefinition, appended: DatasetAppended) -> DatasetCursor:
    """A routine's first cursor: the registered start, else just before this announcement."""
    trigger = definition.trigger
    assert isinstance(trigger, DatasetAppendTrigger)
    registered = registered_cursor(definition)
    if registered is not None:
        return registered
    return cursor_starting_at(trigger.dataset, appended, table_id=None)


def decide_dataset_append(
    definition: RoutineDefinition,
    cursor: DatasetCursor | None,
    appended: DatasetAppended,
    now: datetime,
    max_hops: int,
) -> DatasetDecision:
    """Accumulate an append into a routine's pending range; fire the range once it meets the
    thresholds. The run covers (cursor, to_version] and its id is derived from that range, so
    deciding again from the same cursor gives the same run."""
    trigger = definition.trigger
    assert isinstance(trigger, DatasetAppendTrigger)
    if appended.inserted_by_merge and not trigger.merge_inserts:
        # Not an append to this routine: a later range spanning it reads appends only.
        return DatasetDecision(cursor=None)
    if cursor is None or cursor.dataset != trigger.dataset:
        cursor = first_cursor(definition, appended)
    restarted: list[TriggerRecorded] = []
    if cursor.table_id and appended.table_id and cursor.table_id != appended.table_id:
        # Deleted and created again under the same name: versions restart at 0, and the old
        # table's pending rows are gone with it. Say so, then count the new table afresh.
        lost = f"; {cursor.pending_records} pending rows went with the old table"
        reason = (
            f"dataset {trigger.dataset} was deleted and created again (table "
            f"{appended.table_id}, before {cursor.table_id}): the cursor starts again at "
            f"version {appended.from_version}" + (lost if cursor.pending_records else "")
        )
        key = f"dataset:{trigger.dataset}@{appended.table_id}:recreated"
        restarted.append(_history(definition, "dataset", key, "skipped", now, reason=reason))
        cursor = cursor_starting_at(trigger.dataset, appended, table_id=appended.table_id)
    if appended.to_version <= cursor.seen_version:
        # Already counted: a redelivery, or an announcement repeated past the dedup window.
        return DatasetDecision(cursor=None)
    takes_parent = appended.hop >= cursor.pending_hop
    accumulated = cursor.model_copy(
        update={
            "seen_version": appended.to_version,
            "pending_records": cursor.pending_records + appended.added_records,
            "pending_hop": max(cursor.pending_hop, appended.hop),
            "pending_parent_run_id": (
                appended.parent_run_id if takes_parent else cursor.pending_parent_run_id
            ),
            "table_id": appended.table_id or cursor.table_id,
        }
    )
    event_key = f"dataset:{trigger.dataset}:{appended.from_version}:{appended.to_version}"
    if not definition.enabled:
        reason = (
            f"trigger disabled: {definition.disabled_reason or 'by user'}; "
            f"{accumulated.pending_records} rows wait since version {cursor.fired_version}"
        )
        return DatasetDecision(
            cursor=accumulated,
            history=[
                *restarted,
                _history(definition, "dataset", event_key, "skipped", now, reason=reason),
            ],
        )
    shortfall = threshold_shortfall(trigger, accumulated.pending_records, accumulated.base_records)
    if shortfall is not None:
        reason = f"threshold not met: {shortfall} since version {cursor.fired_version}"
        return DatasetDecision(
            cursor=accumulated,
            history=[
                *restarted,
                _history(definition, "dataset", event_key, "skipped", now, reason=reason),
            ],
        )
    fired = DatasetCursor(
        dataset=trigger.dataset,
        fired_version=appended.to_version,
        seen_version=appended.to_version,
        base_records=appended.table_records,
        table_id=accumulated.table_id,
    )
    # A recreated table repeats the old one's version numbers: its ranges get other run ids.
    table = f"@{accumulated.table_id}" if accumulated.table_id else ""
    range_key = f"dataset:{trigger.dataset}{table}:{cursor.fired_version}:{appended.to_version}"
    hop = accumulated.pending_hop + 1
    limit = hop_limit(definition, max_hops)
    if hop > limit:
        # The rows are consumed without a run: leaving them pending would restart the loop
        # with the next append.
        reason = (
            f"hop {hop} exceeds max_hops {limit}: the rows in versions "
            f"({cursor.fired_version}, {appended.to_version}] were appended by run "
            f"{accumulated.pending_parent_run_id} at hop {accumulated.pending_hop}"
        )
        return DatasetDecision(
            cursor=fired,
            history=[
                *restarted,
                _history(definition, "dataset", range_key, "loop_blocked", now, reason=reason),
            ],
        )
    run_id = run_id_for(definition.name, range_key)
    draft = RunDraft(
        run_id=run_id,
        source="trigger",
        trigger_kind="dataset",
        event={
            "dataset": trigger.dataset,
            "from_version": cursor.fired_version,
            "to_version": appended.to_version,
            "added_records": accumulated.pending_records,
            **({"merge_inserts": True} if trigger.merge_inserts else {}),
        },
        hop=hop,
        parent_run_id=accumulated.pending_parent_run_id,
    )
    return DatasetDecision(
        cursor=fired,
        requests=[build_request(definition, draft, now)],
        history=[
            *restarted,
            _history(definition, "dataset", range_key, "fired", now, run_id=run_id),
        ],
    )


# --- crash-loop protection ------------------------------------------------------------------

StartOutcome = Literal["start_failed", "started", "ignored"]
_ERROR_IN_REASON = 300


@dataclass(frozen=True)
class CrashLoopState:
    """Consecutive start failures of a routine's triggered runs since it was last (re)armed.

    `epoch` is the definition's updated_at when counting began: `routine create` and
    `routine enable` change it, so a new version or a re-enable starts from zero.
    `failures` holds the keys (run ids, trigger event ids) already counted, so a
    redelivered event is not counted twice.
    """

    epoch: str = ""
    failures: tuple[str, ...] = ()

    def to_json(self) -> bytes:
        """As stored in the dispatch bucket."""
        return json.dumps({"epoch": self.epoch, "failures": list(self.failures)}).encode()

    @classmethod
    def from_json(cls, data: bytes | None) -> CrashLoopState:
        """From the dispatch bucket (empty or unreadable means never failed)."""
        try:
            loaded = json.loads(data or b"{}")
            return cls(str(loaded.get("epoch", "")), tuple(loaded.get("failures", ())))
        except (ValueError, AttributeError, TypeError):
            return cls()


@dataclass(frozen=True)
class CrashVerdict:
    """The counter to store, and whether to disable the trigger (with its history row)."""

    state: CrashLoopState
    disable_reason: str | None = None
    history: list[TriggerRecorded] = field(default_factory=list)


def start_outcome(completed: RunCompleted) -> StartOutcome:
    """What a finished run says about whether the routine can start.

    Only triggered runs count as failures: a person starting a broken routine by hand sees
    the error at once, and switching off the schedule because of it would surprise them.
    Any run that reached run() proves the code starts, so it resets the count.
    """
    if completed.phase == "run":
        return "started"
    if completed.status == "failed" and completed.source == "trigger":
        return "start_failed"
    return "ignored"


def trigger_outcome(recorded: TriggerRecorded) -> tuple[StartOutcome, str]:
    """A failed firing (a poll function raising) is a start failure, keyed like its run.

    A firing that names its run is keyed by the run id, so the run's own failed
    RunCompleted and the failed firing count once between them.
    """
    outcome: StartOutcome = "start_failed" if recorded.status == "failed" else "ignored"
    return outcome, recorded.run_id or recorded.message_id()


def decide_crash_loop(
    definition: RoutineDefinition | None,
    state: CrashLoopState,
    outcome: StartOutcome,
    failure_key: str,
    error: str | None,
    threshold: int,
    now: datetime,
    run_id: str | None = None,
) -> CrashVerdict:
    """Count a start failure (or reset on a start); disable the trigger at the threshold."""
    if definition is None or outcome == "ignored":
        return CrashVerdict(state)
    epoch = definition.updated_at.isoformat()
    current = state if state.epoch == epoch else CrashLoopState(epoch)
    if outcome == "started":
        return CrashVerdict(CrashLoopState(epoch) if state.failures else state)
    failures = current.failures
    if failure_key not in failures:
        failures = (*failures, failure_key)[-max(threshold, 1) :]
    counted = CrashLoopState(epoch, failures)
    if len(failures) < threshold or not definition.enabled:
        return CrashVerdict(counted)
    detail = (error or "no error given")[:_ERROR_IN_REASON]
    reason = (
        f"crash loop: {len(failures)} triggered runs in a row failed to start (last: {detail}); "
        f"fix the code and register it again with `mainspring routine create`, or "
        f"`mainspring routine enable {definition.name}`"
    )
    recorded = _history(
        definition,
        definition.trigger.kind,
        f"crash-loop:{failure_key}",
        "disabled",
        now,
        run_id=run_id,
        reason=reason,
    )
    return CrashVerdict(counted, reason, [recorded])
