"""Pure decisions of the recorder: how each run event changes a run row."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from mainspring.contract.messages import (
    TERMINAL_STATUSES,
    AuditRecorded,
    RequestRun,
    RunCompleted,
    RunOptions,
    RunProgressed,
    RunQueued,
    RunStarted,
    SubmitRun,
)

_RANK = {"created": 0, "queued": 1, "running": 2}
# Fields an event may clear by sending None (a started run has no queue reason any more).
_CLEARABLE = frozenset({"queue_reason"})
# What the first terminal event wrote stays: a later copy (or an outside writer) cannot change it.
_SETTLED_RESULT = frozenset(
    {
        "outputs",
        "error",
        "traceback",
        "finished_at",
        "artifacts",
        "queue_reason",
        "peak_memory_bytes",
        "cpu_seconds",
        "wall_seconds",
        "log_uri",
        "dag",
        # Progress has its own stream and may arrive after the run ended: it no longer moves.
        "progress",
        "progress_message",
    }
)


def status_rank(status: str) -> int:
    """Later lifecycle steps rank higher; terminal statuses rank highest."""
    return 3 if status in TERMINAL_STATUSES else _RANK.get(status, 0)


def next_status(current: str | None, incoming: str) -> str:
    """Events may arrive out of order or twice: a run never moves back in its lifecycle."""
    if current is None or status_rank(incoming) > status_rank(current):
        return incoming
    return current


def changes_for_submitted(event: SubmitRun, now: datetime) -> dict[str, Any]:
    """A manual request makes a `created` row."""
    return {
        "routine": event.routine,
        "status": "created",
        "source": event.source,
        "trigger_kind": "manual",
        "inputs": event.inputs,
        "labels": event.labels,
        "attributes": event.attributes,
        "name": event.name,
        "description": event.description,
        "started_by": event.started_by,
        "rerun_of": event.rerun_of,
        "instance": event.routine,
        "method": event.method,
        "invocation": event.invocation,
        **option_columns(event.options),
        # The submit time, not when the recorder got to it (it may lag or restart).
        "created_at": event.submitted_at or now,
    }


def changes_for_requested(event: RequestRun) -> dict[str, Any]:
    """The dispatcher's decision fills the run's definition and queues it."""
    return {
        "routine": event.routine,
        "routine_version": event.routine_version,
        "run_number": event.run_number,
        "status": "queued",
        "source": event.source,
        "trigger_kind": event.trigger_kind,
        "trigger_event": event.event,
        "inputs": event.inputs,
        "labels": event.labels,
        "attributes": event.attributes,
        "name": event.name,
        "description": event.description,
        "started_by": event.started_by,
        "hop": event.hop,
        "parent_run_id": event.parent_run_id,
        "rerun_of": event.rerun_of,
        "trace_id": event.trace_id,
        "blueprint": event.blueprint or event.routine,
        "instance": event.routine,
        "method": event.method,
        "configuration": event.configuration,
        "invocation": event.invocation,
        **option_columns(event.options),
        "created_at": event.submitted_at or event.requested_at,
        "queued_at": event.requested_at,
        # Until a runner takes it, a queued run waits for one (all slots busy or none running).
        "queue_reason": "waiting for a free runner slot",
    }


def changes_for_started(event: RunStarted) -> dict[str, Any]:
    """A runner picked the run up."""
    return {
        "routine": event.routine,
        "status": "running",
        # Only a fallback: the earliest creation time known wins (see merge).
        "created_at": event.started_at,
        "started_at": event.started_at,
        "runner": event.runner,
        "attempt": event.attempt,
        "queue_reason": None,
        "isolation": event.isolation,
        "artifact_location": event.artifact_location,
    }


def changes_for_queued(event: RunQueued) -> dict[str, Any]:
    """A runner holds the run back and says why (never moves a running run back)."""
    return {
        "routine": event.routine,
        "status": "queued",
        "queue_reason": event.reason,
        "created_at": event.at,
    }


def changes_for_progress(event: RunProgressed) -> dict[str, Any]:
    """Latest progress shown on the run row."""
    return {"progress": event.fraction, "progress_message": event.message, "created_at": event.at}


def changes_for_completed(event: RunCompleted) -> dict[str, Any]:
    """The terminal record: status, outputs, artifacts, error."""
    changes: dict[str, Any] = {
        "routine": event.routine,
        "status": event.status,
        "outputs": event.outputs,
        "artifacts": [a.model_dump() for a in event.artifacts],
        "error": event.error,
        "traceback": event.traceback,
        "finished_at": event.finished_at,
        "queue_reason": None,
        "hop": event.hop,
        "parent_run_id": event.parent_run_id,
        "isolation": event.isolation,
        "log_uri": event.log_uri,
        # A run refused before it was requested (or reported by an outside workflow) has no
        # other creation time; an earlier one recorded for it wins (see merge).
        "created_at": event.started_at or event.finished_at,
    }
    if event.run_number:
        changes["run_number"] = event.run_number
    if event.started_at is not None:
        changes["started_at"] = event.started_at
    if event.status == "completed":
        changes["progress"] = 1.0
    # A run that ended before run.started was announced says here who ran it.
    for field in ("runner", "attempt", "artifact_location"):
        if getattr(event, field) is not None:
            changes[field] = getattr(event, field)
    if event.dag is not None:
        changes["dag"] = event.dag.model_dump(mode="json")
    if event.resources is not None:
        changes.update(
            peak_memory_bytes=event.resources.peak_memory_bytes,
            cpu_seconds=event.resources.cpu_seconds,
            wall_seconds=event.resources.wall_seconds,
        )
    return changes


# The options a run's row keeps, flat. Isolation is not among them: its column says how the
# run did execute, which its runner reports (an in-memory run has none).
_OPTION_COLUMNS = {
    "memory_limit",
    "timeout_s",
    "priority",
    "execution",
    "statistics",
    "previews",
    "store_artifacts",
}


def option_columns(options: RunOptions) -> dict[str, Any]:
    """A run's options as the columns of its row (a request's resolved ones include its timeout)."""
    return options.model_dump(include=_OPTION_COLUMNS)


def merge(current: dict[str, Any] | None, changes: dict[str, Any]) -> dict[str, Any]:
    """Apply changes to a row snapshot: status never regresses, a terminal row keeps its result."""
    row = dict(current or {})
    current_status = row.get("status")
    new_status = next_status(current_status, changes.get("status", current_status or "created"))
    terminal_already = current_status in TERMINAL_STATUSES
    for key, value in changes.items():
        if key == "status":
            continue
        if terminal_already and key in _SETTLED_RESULT:
            continue
        if value is None and row.get(key) is not None and key not in _CLEARABLE:
            continue
        if key == "created_at" and row.get(key) is not None:
            # Every event carries a creation time, the run's own or a fallback from a later
            # step: the earliest wins, so the list order (newest first) is stable.
            row[key] = min(row[key], value)
            continue
        if key in ("queued_at", "started_at") and row.get(key) is not None:
            continue
        row[key] = value
    row["status"] = new_status
    return row


def fold(
    current: Mapping[str, dict[str, Any] | None], changes: Iterable[tuple[str, dict[str, Any]]]
) -> dict[str, dict[str, Any]]:
    """A batch of run changes merged in arrival order onto the stored rows: one row per run."""
    rows: dict[str, dict[str, Any]] = {}
    for run_id, change in changes:
        rows[run_id] = merge(rows[run_id] if run_id in rows else current.get(run_id), change)
    return rows


def unattached(
    current: Mapping[str, dict[str, Any] | None], rows: Mapping[str, dict[str, Any]]
) -> set[str]:
    """Runs a batch cannot record: none is stored and nothing in the batch names the routine.

    Only progress without a routine came for them (their run was deleted, or never
    requested): a row without its routine would fail the whole batch's commit on every
    delivery, and the good events with it.
    """
    return {
        run_id
        for run_id, row in rows.items()
        if current.get(run_id) is None and not row.get("routine")
    }


def unattached_reason(subject: str, run_id: str) -> str:
    """Why an event of a run the history does not have is parked, in one line."""
    return (
        f"{subject} for run {run_id}, which the run history still does not have after every "
        "redelivery (never requested, or deleted) and which names no routine: nothing to "
        "record it on; replay it after the run's request if it belongs to one"
    )


def stale_runs(
    running: list[tuple[str, datetime | None, str | None]],
    last_beats: dict[str, datetime],
    watching_since: datetime,
    now: datetime,
    stale_after_s: float,
) -> list[str]:
    """Running runs no runner has heartbeated for stale_after_s (every runner gone).

    `running` holds (run id, started_at, queue_reason). A run waiting for its retry has a
    queue reason and no heartbeat on purpose; it is not stale. Silence is counted from the
    latest of the last heartbeat, the start, and when this recorder began listening, so a
    restarted recorder does not fail runs it simply has not heard about yet.
    """
    stale: list[str] = []
    for run_id, started_at, queue_reason in running:
        if queue_reason:
            continue
        heard = [t for t in (last_beats.get(run_id), started_at, watching_since) if t is not None]
        if (now - max(heard)).total_seconds() > stale_after_s:
            stale.append(run_id)
    return stale


RunEvent = SubmitRun | RequestRun | RunStarted | RunQueued | RunProgressed | RunCompleted


def changes_for(event: RunEvent, now: datetime) -> tuple[str, dict[str, Any]]:
    """The run a lifecycle event belongs to, and how it changes that run's row (times in UTC)."""
    if isinstance(event, SubmitRun):
        run_id, changes = event.request_id, changes_for_submitted(event, now)
    elif isinstance(event, RequestRun):
        run_id, changes = event.run_id, changes_for_requested(event)
    elif isinstance(event, RunStarted):
        run_id, changes = event.run_id, changes_for_started(event)
    elif isinstance(event, RunQueued):
        run_id, changes = event.run_id, changes_for_queued(event)
    elif isinstance(event, RunProgressed):
        run_id, changes = event.run_id, changes_for_progress(event)
    else:
        run_id, changes = event.run_id, changes_for_completed(event)
    return run_id, in_utc(changes)


def in_utc(values: dict[str, Any]) -> dict[str, Any]:
    """Every time in UTC: SQLite stores no offset, so rows compare and sort only in one zone."""
    return {
        key: _utc(value) if isinstance(value, datetime) else value for key, value in values.items()
    }


def _utc(value: datetime) -> datetime:
    # A naive time here came from SQLite, which stores UTC without an offset.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def stale_error(stale_after_s: float) -> str:
    """Why the sweep ended a run."""
    return (
        f"no runner heartbeat for {stale_after_s:g}s: every runner holding or able to take "
        "this run stopped; it will not be run later"
    )


def completion_for_stale(
    row: Mapping[str, Any], stale_after_s: float, now: datetime
) -> RunCompleted:
    """The outcome the sweep publishes for a stale run: failed, carrying what its row knows.

    Published like a runner's, so completion triggers (`on_workflow_failure`) fire and the
    bus and the run history agree. Hop and parent travel on, so loop protection still holds.
    """
    source, isolation = row.get("source"), row.get("isolation")
    return RunCompleted(
        run_id=row["id"],
        routine=row["routine"],
        run_number=row.get("run_number") or 0,
        status="failed",
        error=stale_error(stale_after_s),
        hop=row.get("hop") or 0,
        parent_run_id=row.get("parent_run_id"),
        started_at=row.get("started_at"),
        finished_at=now,
        source=source if source in ("trigger", "manual", "api") else None,
        isolation=isolation if isolation in ("worker", "process") else None,
    )


def split_deletable(statuses: Mapping[str, str]) -> tuple[list[str], list[str]]:
    """(runs that may be deleted, runs kept because they have not ended), each sorted.

    A run still created, queued or running is never deleted: its runner would write it
    back, and its outcome is still to come.
    """
    finished = sorted(run_id for run_id, status in statuses.items() if status in TERMINAL_STATUSES)
    unfinished = sorted(run_id for run_id, status in statuses.items() if run_id not in finished)
    return finished, unfinished


def retention_cutoff(now: datetime, keep_days: float | None) -> datetime | None:
    """Finished runs created before this time are past the retention (None: kept by age)."""
    return None if keep_days is None else now - timedelta(days=keep_days)


def audit_row(entry: AuditRecorded, run_routines: Mapping[str, str]) -> dict[str, Any]:
    """The audit table row of one entry; a run's routine taken from the run history when
    the client did not name it (a cancel knows only the run id)."""
    routine = entry.routine
    if routine is None and entry.run_id is not None:
        routine = run_routines.get(entry.run_id)
    return {
        "id": entry.entry_id,
        "who": entry.who,
        "action": entry.action,
        "target_kind": entry.target_kind,
        "target": entry.target,
        "routine": routine,
        "run_id": entry.run_id,
        "reason": entry.reason,
        "details": entry.details or None,
        "at": _utc(entry.at),
    }
