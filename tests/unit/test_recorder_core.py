"""The recorder never moves a run back in its lifecycle, whatever order events arrive in."""

from __future__ import annotations

from datetime import UTC, datetime
from itertools import permutations
from typing import Any

import pytest

from services.recorder.core import merge, next_status

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
