"""Isolation is chosen per routine or per run, carried on the request and recorded."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from mainspring import Routine, on_complete
from mainspring.contract.messages import RunCompleted, RunOptions, RunStarted, SubmitRun
from mainspring.sdk.routine import ContractError, inspect_contract
from mainspring.sdk.triggers import ScheduleTrigger
from mainspring.storage.registry import RoutineDefinition, RoutineOptions
from mainspring_services.dispatcher import manual
from mainspring_services.recorder import core as recorder

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class Forked(Routine):
    isolation = "process"

    def run(self, event: Any = on_complete("upstream")) -> None:
        return None


class Threaded(Routine):
    isolation = "thread"

    def run(self, event: Any = on_complete("upstream")) -> None:
        return None


def test_a_routine_declares_its_isolation_and_a_wrong_one_names_the_fix() -> None:
    assert Routine.isolation == "worker"
    inspect_contract(Forked)

    with pytest.raises(ContractError) as raised:
        inspect_contract(Threaded)

    assert str(raised.value) == (
        "Threaded.isolation is 'thread': set it to 'worker' (a reused worker process) "
        "or 'process' (a fresh process per run)"
    )


def _definition(isolation: Any) -> RoutineDefinition:
    return RoutineDefinition(
        name="job",
        version="v1",
        entrypoint="routine.py:Job",
        class_name="Job",
        trigger_param="event",
        trigger=ScheduleTrigger(every="1m"),
        options=RoutineOptions(isolation=isolation),
        created_at=NOW,
        updated_at=NOW,
    )


@pytest.mark.parametrize(
    ("routine", "run", "expected"),
    [
        ("worker", None, "worker"),
        ("process", None, "process"),
        ("worker", "process", "process"),
        ("process", "worker", "worker"),
    ],
)
def test_a_run_takes_its_own_isolation_else_the_routines(
    routine: str, run: Any, expected: str
) -> None:
    submitted = SubmitRun(request_id="r1", routine="job", options=RunOptions(isolation=run))

    decision = manual.decide_manual(_definition(routine), submitted, NOW)

    assert [r.options.isolation for r in decision.requests] == [expected]


def test_the_recorder_keeps_the_isolation_a_run_ran_with() -> None:
    started = RunStarted(
        run_id="r1", routine="job", runner="runner@h:1", started_at=NOW, isolation="process"
    )
    completed = RunCompleted(run_id="r1", routine="job", status="completed", isolation="process")

    row = recorder.merge(None, recorder.changes_for_started(started))
    row = recorder.merge(row, recorder.changes_for_completed(completed))

    assert row["isolation"] == "process"
    assert row["status"] == "completed"
