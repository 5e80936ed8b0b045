"""In-memory runs are decided by the dispatcher like manual ones, and refused unless allowed."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from mainspring.contract.messages import RunOptions, SubmitRun
from mainspring.sdk.triggers import ScheduleTrigger
from mainspring.storage.registry import RoutineDefinition, RoutineOptions
from mainspring_services.dispatcher import manual

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _definition(allow_in_memory: bool) -> RoutineDefinition:
    return RoutineDefinition(
        name="job",
        version="v1",
        entrypoint="routine.py:Job",
        class_name="Job",
        trigger_param="event",
        # A schedule routine run by hand gets a tick at now: no context is needed.
        trigger=ScheduleTrigger(every="1h"),
        options=RoutineOptions(allow_in_memory=allow_in_memory),
        created_at=NOW,
        updated_at=NOW,
    )


def _submitted() -> SubmitRun:
    return SubmitRun(
        request_id="r1", routine="job", labels=["a"], options=RunOptions(execution="in_memory")
    )


def test_an_allowed_in_memory_run_gets_the_same_request_as_a_manual_one() -> None:
    decision = manual.decide_in_memory(_definition(True), _submitted(), NOW)

    assert decision.requests == manual.decide_manual(_definition(True), _submitted(), NOW).requests
    assert [(r.run_id, r.source, r.hop, r.parent_run_id) for r in decision.requests] == [
        ("r1", "manual", 0, None)
    ]


@pytest.mark.parametrize("definition", [_definition(False), None])
def test_an_in_memory_run_is_refused_with_the_fix(definition: RoutineDefinition | None) -> None:
    decision = manual.decide_in_memory(definition, _submitted(), NOW)

    assert not decision.requests
    [refused] = decision.refused
    assert refused.run_id == "r1"
    assert refused.status == "failed"
    fix = "allow_in_memory = True" if definition else "mainspring routine create"
    assert refused.error is not None
    assert fix in refused.error
