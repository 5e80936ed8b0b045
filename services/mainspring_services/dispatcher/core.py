"""The dispatcher's shared decisions: run ids, requests, refusals and history rows.

Each kind of trigger decides in its own module (manual, completions, datasets, timed,
named, crash_loop, breaker); all are pure: data in, decisions out.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from mainspring.contract.messages import (
    CHAIN_LIMIT,
    AuditRecorded,
    InvocationType,
    RequestRun,
    ResolvedRunOptions,
    RunCompleted,
    RunOptions,
    RunPhase,
    RunSource,
    TriggerKind,
    TriggerRecorded,
)
from mainspring.sdk.routine import RUN_METHOD, validate_inputs
from mainspring.storage.capacity import RunnerCapacity, largest, mebibytes
from mainspring.storage.registry import (
    RoutineDefinition,
    RoutineOptions,
    method_input_specs,
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
    options: RunOptions = field(default_factory=RunOptions)
    chain: list[str] = field(default_factory=list)
    submitted_at: datetime | None = None
    rerun_of: str | None = None
    invocation: InvocationType = "direct"
    method: str = RUN_METHOD


def resolve_options(asked: RunOptions, routine: RoutineOptions) -> ResolvedRunOptions:
    """The options a run executes with: what its caller asked, the routine's own for the rest.

    An explicit memory limit, isolation or priority beats the routine's; None leaves it to the
    routine. Timeout, retries and concurrency are the routine's alone.
    """
    with_defaults = {
        "memory_limit": routine.memory_limit if asked.memory_limit is None else asked.memory_limit,
        "isolation": routine.isolation if asked.isolation is None else asked.isolation,
        "priority": routine.priority if asked.priority is None else asked.priority,
        "timeout_s": routine.timeout_s,
        "retries": routine.retries,
        "retry_backoff_s": routine.retry_backoff_s,
        "max_concurrent": routine.max_concurrent,
    }
    return ResolvedRunOptions.model_validate(asked.model_dump() | with_defaults)


def build_request(definition: RoutineDefinition, draft: RunDraft, now: datetime) -> RequestRun:
    """A run request from a definition and the event-specific draft (run number assigned later)."""
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
        options=resolve_options(draft.options, definition.options),
        requested_at=now,
        chain=draft.chain,
        submitted_at=draft.submitted_at,
        rerun_of=draft.rerun_of,
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


def memory_refusal(request: RequestRun, runners: list[RunnerCapacity]) -> str | None:
    """Why no live runner can ever hold the run's memory limit (None: one can, the run has
    no limit, or no runner is live: one may come, and the run waits for it)."""
    needed = request.options.memory_limit
    biggest = largest(runners)
    if not needed or biggest is None or needed <= biggest.memory_total:
        return None
    return (
        f"no runner has that much memory: {request.routine} asks for {mebibytes(needed)} MiB, "
        f"the largest runner has {mebibytes(biggest.memory_total)} MiB; lower the routine's "
        "memory or start a runner with more"
    )


def split_oversized(
    requests: list[RequestRun], runners: list[RunnerCapacity], now: datetime
) -> tuple[list[RequestRun], list[RunCompleted]]:
    """The requests a live runner can hold, and the refusals of those none can."""
    fitting: list[RequestRun] = []
    refused: list[RunCompleted] = []
    for request in requests:
        reason = memory_refusal(request, runners)
        if reason is None:
            fitting.append(request)
            continue
        refused.append(
            refuse(
                request.run_id,
                request.routine,
                reason,
                now,
                request.hop,
                source=request.source,
                parent_run_id=request.parent_run_id,
                chain=request.chain,
            )
        )
    return fitting, refused


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


# Who the audit trail names for what the dispatcher does on its own.
DISPATCHER_ACTOR = "mainspring:dispatcher"


def pause_audit(
    routine: str,
    reason: str,
    by: str,
    history: list[TriggerRecorded],
    now: datetime,
) -> AuditRecorded:
    """The audit entry of a routine the dispatcher switched off (crash loop, circuit
    breaker): the same entry however often the event that tripped it is redelivered."""
    cause = history[0].message_id() if history else f"{reason}@{now.isoformat()}"
    return AuditRecorded(
        entry_id=str(uuid.uuid5(_RUN_NAMESPACE, f"pause\x00{routine}\x00{cause}")),
        who=DISPATCHER_ACTOR,
        action="routine.disable",
        target_kind="routine",
        target=routine,
        routine=routine,
        reason=reason,
        details={"by": by},
        at=now,
    )


def history_row(
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
