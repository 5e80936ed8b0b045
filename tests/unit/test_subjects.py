"""Completion subjects: one token per routine name, a separate root for external workflows."""

from __future__ import annotations

import pytest

from mainspring.contract import subjects
from mainspring.contract.messages import RunCompleted


@pytest.mark.parametrize(
    ("routine", "subject"),
    [
        ("nightly-report", "run.completed.nightly-report.failed"),
        ("team/report", "run.completed.team_2freport.failed"),
        ("a.b", "run.completed.a_2eb.failed"),
        ("a_b", "run.completed.a_5fb.failed"),
    ],
)
def test_a_routine_name_is_one_subject_token(routine: str, subject: str) -> None:
    assert subjects.run_completed_subject(routine, "failed") == subject


def test_a_completion_is_published_under_its_routine_and_status() -> None:
    completed = RunCompleted(run_id="r-1", routine="team/report", status="cancelled")

    assert completed.subject() == "run.completed.team_2freport.cancelled"
    assert subjects.is_run_completed(completed.subject())


def test_external_completions_have_their_own_root_inside_the_stream() -> None:
    subject = subjects.external_completed_subject("nightly-etl", "completed")

    assert subject == "external.completed.nightly-etl.completed"
    assert not subjects.is_run_completed(subject)
    assert subjects.EXTERNAL_COMPLETED_ANY in subjects.STREAM_SUBJECTS
