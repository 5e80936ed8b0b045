"""The recorder never moves a run back in its lifecycle, whatever order events arrive in."""

from __future__ import annotations

from datetime import UTC, datetime
from itertools import permutations
from typing import Any

import pytest

from mainspring.contract import subjects
from mainspring.contract.messages import RequestRun, ResolvedRunOptions, SubmitRun
from mainspring_services.recorder.core import (
    changes_for_requested,
    changes_for_submitted,
    fold,
    merge,
    next_status,
    unattached,
)
from mainspring_services.recorder.handlers import event_model
from tests.messages import a_request

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("current", "incoming", "expected"),
    [
        (None, "queued", "queued"),
        ("created", "queued", "queued"),
        ("queued", "running", "running"),
        ("running", "queued", "running"),
        ("running", "completed", "completed"),
        ("completed", "running", "completed"),
        ("failed", "queued", "failed"),
        ("cancelled", "completed", "cancelled"),
    ],
)
def test_status_never_regresses(current: str | None, incoming: str, expected: str) -> None:
    assert next_status(current, incoming) == expected


EVENTS: list[dict[str, Any]] = [
    {"status": "queued", "queued_at": T0, "created_at": T0, "run_number": 4},
    {"status": "running", "started_at": T0.replace(second=1), "runner": "r1"},
    {"status": "completed", "outputs": {"n": 1}, "finished_at": T0.replace(second=2)},
]


@pytest.mark.parametrize("order", list(permutations(range(3))))
def test_any_arrival_order_gives_the_same_final_row(order: tuple[int, ...]) -> None:
    row: dict[str, Any] | None = None
    for index in order:
        row = merge(row, EVENTS[index])

    assert row is not None
    assert row["status"] == "completed"
    assert row["outputs"] == {"n": 1}
    assert row["run_number"] == 4
    assert row["runner"] == "r1"
    assert row["started_at"] == T0.replace(second=1)


def test_a_duplicate_completion_does_not_overwrite_the_first() -> None:
    first = merge(None, {"status": "failed", "error": "boom", "finished_at": T0})
    again = merge(
        first, {"status": "failed", "error": "other", "finished_at": T0.replace(second=9)}
    )

    assert again["error"] == "boom"
    assert again["finished_at"] == T0


def test_progress_arriving_after_the_completion_leaves_the_finished_row_alone() -> None:
    # Progress travels on its own stream, so it can reach the recorder after the completion.
    running = merge(None, {"status": "running", "progress": 0.2, "progress_message": "a"})
    done = merge(running, {"status": "completed", "progress": 1.0, "finished_at": T0})
    late = merge(done, {"progress": 0.9, "progress_message": "b", "created_at": T0})

    assert (late["status"], late["progress"], late["progress_message"]) == ("completed", 1.0, "a")


# --- batches: several events of one run folded into one row write ---------------------------

REQUESTED = {
    "routine": "r",
    "status": "queued",
    "created_at": T0,
    "queued_at": T0,
    "run_number": 7,
    "queue_reason": "waiting for a free runner slot",
}
STARTED = {
    "routine": "r",
    "status": "running",
    "created_at": T0.replace(second=1),
    "started_at": T0.replace(second=1),
    "queue_reason": None,
}
LATE_QUEUED = {
    "routine": "r",
    "status": "queued",
    "queue_reason": "held back",
    "created_at": T0.replace(second=1),
}
COMPLETED = {
    "routine": "r",
    "status": "completed",
    "outputs": {"n": 1},
    "finished_at": T0.replace(second=2),
    "created_at": T0.replace(second=1),
    "queue_reason": None,
}


def test_a_whole_lifecycle_in_one_batch_is_one_completed_row() -> None:
    rows = fold({}, [("a", REQUESTED), ("a", STARTED), ("a", COMPLETED)])

    assert list(rows) == ["a"]
    row = rows["a"]
    assert row["status"] == "completed"
    assert row["outputs"] == {"n": 1}
    assert (row["created_at"], row["queued_at"], row["started_at"], row["finished_at"]) == (
        T0,
        T0,
        T0.replace(second=1),
        T0.replace(second=2),
    )
    assert row["run_number"] == 7
    assert row["queue_reason"] is None


def test_a_late_queued_in_the_same_batch_never_marks_a_finished_run() -> None:
    rows = fold({}, [("a", REQUESTED), ("a", COMPLETED), ("a", LATE_QUEUED)])

    assert rows["a"]["status"] == "completed"
    assert rows["a"]["queue_reason"] is None


def test_a_batch_folds_onto_the_stored_row_without_moving_it_back() -> None:
    stored = merge(merge(None, REQUESTED), COMPLETED)

    rows = fold({"a": stored}, [("a", STARTED), ("a", LATE_QUEUED)])

    assert rows["a"]["status"] == "completed"
    assert rows["a"]["finished_at"] == T0.replace(second=2)


def test_runs_interleaved_in_a_batch_get_one_row_each() -> None:
    rows = fold(
        {"b": None},
        [("a", REQUESTED), ("b", REQUESTED), ("a", STARTED), ("b", COMPLETED), ("a", LATE_QUEUED)],
    )

    assert {run_id: row["status"] for run_id, row in rows.items()} == {
        "a": "running",
        "b": "completed",
    }


@pytest.mark.parametrize("order", list(permutations(range(4))))
def test_a_batch_in_any_order_ends_where_one_by_one_merges_end(order: tuple[int, ...]) -> None:
    events = [REQUESTED, STARTED, LATE_QUEUED, COMPLETED]
    batch = [("a", events[i]) for i in order]
    one_by_one: dict[str, Any] | None = None
    for _, change in batch:
        one_by_one = merge(one_by_one, change)

    folded = fold({}, batch)["a"]

    assert folded == one_by_one
    assert folded["status"] == "completed"
    assert folded["created_at"] == T0


def test_the_earliest_creation_time_wins_over_a_fallback_seen_first() -> None:
    refused_first = merge(None, COMPLETED)
    assert refused_first["created_at"] == T0.replace(second=1)

    assert merge(refused_first, REQUESTED)["created_at"] == T0


@pytest.mark.parametrize(
    ("stored", "batch_row", "left_out"),
    [
        (None, {"progress": 0.5}, True),
        (None, {"progress": 0.5, "routine": "hello"}, False),
        ({"routine": "hello"}, {"progress": 0.5, "routine": "hello"}, False),
        ({"routine": "hello"}, {"progress": 0.5}, False),
    ],
)
def test_only_a_new_run_without_a_routine_is_unattached(
    stored: dict[str, Any] | None, batch_row: dict[str, Any], left_out: bool
) -> None:
    assert unattached({"r": stored}, {"r": batch_row}) == ({"r"} if left_out else set())


def test_a_request_held_by_the_dispatcher_is_recorded_like_a_requested_one() -> None:
    assert event_model(subjects.run_held_subject("a/b")) is RequestRun
    assert event_model(subjects.RUN_REQUESTED) is RequestRun


def test_a_run_row_keeps_the_priority_it_was_requested_at() -> None:
    # A submit without --priority leaves it to the routine: the request says which it was.
    submitted = changes_for_submitted(SubmitRun(request_id="a", routine="r"), T0)
    request = a_request("a", routine="r", options=ResolvedRunOptions(priority="high"))

    rows = fold({}, [("a", submitted), ("a", changes_for_requested(request))])

    assert submitted["priority"] is None
    assert rows["a"]["priority"] == "high"
