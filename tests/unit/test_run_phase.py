"""Which phase a run ended in: before run() was called (start) or after (run)."""

from __future__ import annotations

from typing import Any

import pytest

from mainspring_services.runner.core import outcome_of


@pytest.mark.parametrize(
    ("result", "cancelled", "phase"),
    [
        (
            {"status": "failed", "error": "cannot import routine.py", "phase": "start"},
            False,
            "start",
        ),
        ({"status": "failed", "error": "ValueError: boom"}, False, "run"),
        ({"status": "completed", "outputs": {"n": 1}}, False, "run"),
        ({"status": "failed", "phase": "something-else"}, False, "run"),
        (None, False, "run"),  # the process died: it may well have been inside run()
        ({"status": "failed", "phase": "start"}, True, "run"),  # cancelled wins
    ],
)
def test_phase_of_an_outcome(result: dict[str, Any] | None, cancelled: bool, phase: str) -> None:
    outcome = outcome_of(
        result,
        -9 if result is None else 0,
        cancelled=cancelled,
        timed_out_after=None,
        memory_exceeded=False,
        log_tail="",
    )

    assert outcome.phase == phase
