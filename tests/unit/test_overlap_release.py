"""Which completions can free an overlap slot (the others need no read of the state)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from mainspring.contract.messages import RunCompleted, RunSource
from mainspring_services.dispatcher import timed


@pytest.mark.parametrize(
    ("source", "may_hold"), [("trigger", True), (None, True), ("manual", False), ("api", False)]
)
def test_only_triggered_runs_can_hold_an_overlap_slot(
    source: RunSource | None, may_hold: bool
) -> None:
    completed = RunCompleted(
        run_id="r1", routine="nightly", status="completed", finished_at=datetime.now(UTC)
    ).model_copy(update={"source": source})

    assert timed.may_hold_a_slot(completed) is may_hold
