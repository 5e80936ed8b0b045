"""Dispatch decisions for dataset appends: cursors, thresholds, redelivery and hops."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from mainspring.contract.messages import DatasetAppended
from mainspring.sdk.triggers import DatasetAppendTrigger
from mainspring.storage.cursors import DatasetCursor
from mainspring.storage.registry import DatasetStart, RoutineDefinition, RoutineOptions
from mainspring_services.dispatcher import core, datasets

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def definition(
    batch_rows: int | None = None,
    added_fraction: float | None = None,
    enabled: bool = True,
    max_hops: int | None = None,
    name: str = "embed",
) -> RoutineDefinition:
    return RoutineDefinition(
        name=name,
        version="v1",
        entrypoint="embed.py:Embed",
        class_name="Embed",
        trigger_param="new_rows",
        trigger=DatasetAppendTrigger(
            dataset="photos", batch_rows=batch_rows, added_fraction=added_fraction
        ),
        options=RoutineOptions(max_hops=max_hops),
        enabled=enabled,
        created_at=NOW,
        updated_at=NOW,
    )


def cursor(
    fired: int, seen: int | None = None, pending: int = 0, base: int | None = 0, hop: int = 0
) -> DatasetCursor:
    return DatasetCursor(
        dataset="photos",
        fired_version=fired,
        seen_version=fired if seen is None else seen,
        pending_records=pending,
        pending_hop=hop,
        base_records=base,
    )


def appended(
    to: int, rows: int, table: int | None = None, hop: int = 0, parent: str | None = None
) -> DatasetAppended:
    return DatasetAppended(
        dataset="photos",
        from_version=to - 1,
        to_version=to,
        added_records=rows,
        table_records=table,
        hop=hop,
        parent_run_id=parent,
    )


@pytest.mark.parametrize(
    ("batch_rows", "fraction", "start", "event", "fires", "pending_after"),
    [
        # no threshold: every append fires
        (None, None, cursor(3), appended(4, 1, 11), True, 0),
        (None, None, cursor(3), appended(4, 0, 10), False, 0),
        # batch_rows: only once enough rows accumulated since the cursor
        (100, None, cursor(3), appended(4, 40, 50), False, 40),
        (100, None, cursor(3, seen=4, pending=40), appended(5, 59, 109), False, 99),
        (100, None, cursor(3, seen=5, pending=99), appended(6, 1, 110), True, 0),
        (100, None, cursor(3), appended(4, 250, 260), True, 0),
        # an update in between (version 5) is never announced: the gap is fine
        (100, None, cursor(3, seen=4, pending=40), appended(6, 60, 100), True, 0),
        # added_fraction of the table size at the cursor
        (None, 0.5, cursor(3, base=100), appended(4, 49, 149), False, 49),
        (None, 0.5, cursor(3, seen=4, pending=49, base=100), appended(5, 1, 150), True, 0),
        (None, 0.1, cursor(3, base=0), appended(4, 1, 1), True, 0),  # empty table: any rows
        # both given: both must be met
        (10, 0.5, cursor(3, base=100), appended(4, 20, 120), False, 20),
        (10, 0.5, cursor(3, base=10), appended(4, 20, 30), True, 0),
    ],
)
def test_thresholds(
    batch_rows: int | None,
    fraction: float | None,
    start: DatasetCursor,
    event: DatasetAppended,
    fires: bool,
    pending_after: int,
) -> None:
    decision = datasets.decide_dataset_append(
        definition(batch_rows, fraction), start, event, NOW, max_hops=8
    )

    assert decision.cursor is not None
    assert bool(decision.requests) is fires
    assert decision.cursor.pending_records == pending_after
    assert decision.cursor.seen_version == event.to_version
    if fires:
        (request,) = decision.requests
        assert request.event == {
            "dataset": "photos",
            "from_version": start.fired_version,
            "to_version": event.to_version,
            "added_records": start.pending_records + event.added_records,
        }
        assert decision.cursor.fired_version == event.to_version
        assert decision.cursor.base_records == event.table_records
        assert [h.status for h in decision.history] == ["fired"]
    else:
        assert decision.cursor.fired_version == start.fired_version
        assert [h.status for h in decision.history] == ["skipped"]


def test_the_same_range_gives_the_same_run_id_so_a_redelivery_cannot_double_it() -> None:
    first = datasets.decide_dataset_append(definition(), cursor(3), appended(4, 5, 10), NOW, 8)
    again = datasets.decide_dataset_append(definition(), cursor(3), appended(4, 5, 10), NOW, 8)

    assert first.requests[0].run_id == again.requests[0].run_id
    assert first.requests[0].run_id == core.run_id_for("embed", "dataset:photos:3:4")


@pytest.mark.parametrize("to_version", [4, 5])
def test_an_already_counted_version_changes_nothing(to_version: int) -> None:
    counted = cursor(3, seen=5, pending=40)
    decision = datasets.decide_dataset_append(
        definition(100), counted, appended(to_version, 40), NOW, 8
    )
    assert decision.cursor is None
    assert not decision.requests
    assert not decision.history


def test_without_a_seeded_cursor_the_first_event_starts_it() -> None:
    decision = datasets.decide_dataset_append(definition(), None, appended(7, 5, 25), NOW, 8)

    assert decision.requests[0].event["from_version"] == 6
    assert decision.cursor == cursor(7, base=25)


def test_a_disabled_routine_keeps_accumulating_so_nothing_is_lost() -> None:
    decision = datasets.decide_dataset_append(
        definition(enabled=False), cursor(3), appended(4, 5, 10), NOW, 8
    )

    assert not decision.requests
    assert decision.cursor == cursor(3, seen=4, pending=5).model_copy(
        update={"pending_parent_run_id": None}
    )
    assert decision.history[0].status == "skipped"
    assert "disabled" in (decision.history[0].reason or "")


@pytest.mark.parametrize(
    ("event_hop", "pending_hop", "routine_max", "blocked", "run_hop"),
    [
        (0, 0, None, False, 1),
        (3, 0, None, False, 4),
        (0, 5, None, False, 6),  # rows from a deeper chain still pending
        (7, 0, None, False, 8),
        (8, 0, None, True, None),
        (2, 0, 2, True, None),  # the routine's own max_hops wins
    ],
)
def test_hops(
    event_hop: int, pending_hop: int, routine_max: int | None, blocked: bool, run_hop: int | None
) -> None:
    start = cursor(3, seen=3, pending=0, hop=pending_hop)
    decision = datasets.decide_dataset_append(
        definition(max_hops=routine_max),
        start,
        appended(4, 5, 10, hop=event_hop, parent="parent-run"),
        NOW,
        max_hops=8,
    )

    assert decision.cursor is not None
    assert decision.cursor.fired_version == 4
    if blocked:
        assert not decision.requests
        assert [h.status for h in decision.history] == ["loop_blocked"]
        assert "exceeds max_hops" in (decision.history[0].reason or "")
    else:
        (request,) = decision.requests
        assert request.hop == run_hop
        if event_hop >= pending_hop:
            assert request.parent_run_id == "parent-run"


@pytest.mark.parametrize(("from_version", "to_version"), [(3, 3), (5, 4)])
def test_an_empty_or_reversed_range_is_malformed(from_version: int, to_version: int) -> None:
    with pytest.raises(ValidationError, match="must be below to_version"):
        DatasetAppended(
            dataset="photos", from_version=from_version, to_version=to_version, added_records=1
        )


def test_a_recreated_dataset_restarts_the_cursor_with_a_clear_event() -> None:
    old = cursor(fired=7, seen=9, pending=40).model_copy(update={"table_id": "old-table"})
    first = appended(to=0, rows=3, table=3).model_copy(update={"table_id": "new-table"})

    decision = datasets.decide_dataset_append(definition(), old, first, NOW, max_hops=8)

    (request,) = decision.requests
    assert (request.event["from_version"], request.event["to_version"]) == (-1, 0)
    assert request.event["added_records"] == 3
    restarted, fired = decision.history
    assert restarted.status == "skipped"
    assert fired.status == "fired"
    assert restarted.reason is not None
    assert "deleted and created again" in restarted.reason
    assert "40 pending rows went with the old table" in restarted.reason
    assert decision.cursor is not None
    assert (decision.cursor.table_id, decision.cursor.fired_version) == ("new-table", 0)


def test_the_same_range_of_a_recreated_table_is_another_run() -> None:
    def run_for(table_id: str) -> str:
        start = cursor(fired=-1).model_copy(update={"table_id": table_id})
        event = appended(to=0, rows=3).model_copy(update={"table_id": table_id})
        (request,) = datasets.decide_dataset_append(definition(), start, event, NOW, 8).requests
        return request.run_id

    assert run_for("old-table") != run_for("new-table")
    assert run_for("old-table") == run_for("old-table")


def test_a_cursor_learns_its_table_from_the_first_announcement_naming_it() -> None:
    event = appended(to=5, rows=2).model_copy(update={"table_id": "t-1"})
    decision = datasets.decide_dataset_append(definition(batch_rows=10), cursor(4), event, NOW, 8)
    assert decision.cursor is not None
    assert decision.cursor.table_id == "t-1"
    assert [h.status for h in decision.history] == ["skipped"]  # below batch_rows, no restart


def test_a_merge_that_only_inserted_fires_only_routines_that_opted_in() -> None:
    merge = appended(to=5, rows=2).model_copy(update={"inserted_by_merge": True})
    opted_out = datasets.decide_dataset_append(definition(), cursor(4), merge, NOW, 8)
    assert (opted_out.cursor, opted_out.requests, opted_out.history) == (None, [], [])

    opted_in = definition().model_copy(
        update={"trigger": DatasetAppendTrigger(dataset="photos", merge_inserts=True)}
    )
    (request,) = datasets.decide_dataset_append(opted_in, cursor(4), merge, NOW, 8).requests
    assert request.event["merge_inserts"] is True
    assert request.event["added_records"] == 2


def test_a_new_routine_counts_from_where_registration_found_the_dataset() -> None:
    """Rows older than the routine never fire it: the first append is counted from the
    registered start, not from the version just before that append."""
    registered = definition(batch_rows=10).model_copy(
        update={"dataset_start": DatasetStart(dataset="photos", version=3, records=40)}
    )
    # Versions 4..6 were announced while the dispatcher had no cursor: 3 rows each.
    event = DatasetAppended(
        dataset="photos", from_version=3, to_version=6, added_records=9, table_records=49
    )
    decision = datasets.decide_dataset_append(registered, None, event, NOW, max_hops=10)
    assert decision.cursor is not None
    assert not decision.requests, "9 rows since registration are below batch_rows=10"
    assert (decision.cursor.fired_version, decision.cursor.seen_version) == (3, 6)
    assert decision.cursor.base_records == 40


def test_a_start_registered_for_another_dataset_is_ignored() -> None:
    moved = definition().model_copy(
        update={"dataset_start": DatasetStart(dataset="videos", version=30, records=5)}
    )
    assert datasets.registered_cursor(moved) is None
    decision = datasets.decide_dataset_append(moved, None, appended(8, rows=2), NOW, max_hops=10)
    assert decision.cursor is not None
    assert decision.cursor.fired_version == 8, "fired from the announcement, not version 30"


def test_an_existing_cursor_wins_over_the_registered_start() -> None:
    """Re-registering new code takes a new snapshot; the cursor the routine has is kept."""
    updated = definition(batch_rows=5).model_copy(
        update={"dataset_start": DatasetStart(dataset="photos", version=20, records=100)}
    )
    decision = datasets.decide_dataset_append(
        updated, cursor(10, pending=3), appended(21, rows=2), NOW, max_hops=10
    )
    assert decision.cursor is not None
    assert len(decision.requests) == 1, "3 pending + 2 new meet batch_rows=5"
    assert decision.requests[0].event["from_version"] == 10
