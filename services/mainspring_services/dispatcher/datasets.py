"""Dataset appends: per-routine cursors, thresholds and the range each run covers."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from mainspring.contract.messages import (
    DatasetAppended,
    RequestRun,
    TriggerRecorded,
)
from mainspring.sdk.triggers import (
    DatasetAppendTrigger,
)
from mainspring.storage.cursors import DatasetCursor
from mainspring.storage.registry import (
    RoutineDefinition,
)
from mainspring_services.dispatcher.core import (
    RunDraft,
    build_request,
    history_row,
    hop_limit,
    run_id_for,
)


@dataclass(frozen=True)
class DatasetDecision:
    """For one routine and one append event: what to publish and the cursor to store after."""

    cursor: DatasetCursor | None
    requests: list[RequestRun] = field(default_factory=list)
    history: list[TriggerRecorded] = field(default_factory=list)


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
        restarted.append(history_row(definition, "dataset", key, "skipped", now, reason=reason))
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
                history_row(definition, "dataset", event_key, "skipped", now, reason=reason),
            ],
        )
    shortfall = threshold_shortfall(trigger, accumulated.pending_records, accumulated.base_records)
    if shortfall is not None:
        reason = f"threshold not met: {shortfall} since version {cursor.fired_version}"
        return DatasetDecision(
            cursor=accumulated,
            history=[
                *restarted,
                history_row(definition, "dataset", event_key, "skipped", now, reason=reason),
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
                history_row(definition, "dataset", range_key, "loop_blocked", now, reason=reason),
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
            history_row(definition, "dataset", range_key, "fired", now, run_id=run_id),
        ],
    )
