"""A run started by hand gets the event its trigger would deliver (pure dispatcher decisions)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from mainspring.contract.messages import SubmitRun
from mainspring.sdk.triggers import (
    AnyTrigger,
    CompletionTrigger,
    DatasetAppendTrigger,
    PollTrigger,
    ScheduleTrigger,
)
from mainspring.storage.cursors import DatasetCursor
from mainspring.storage.registry import InputSchema, RoutineDefinition
from mainspring_services.dispatcher import core, manual

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
PHOTOS = DatasetAppendTrigger(dataset="photos", batch_rows=100)
AFTER_EVAL = CompletionTrigger(routine="train", status="completed")


def definition(trigger: AnyTrigger, **inputs: InputSchema) -> RoutineDefinition:
    return RoutineDefinition(
        name="job",
        version="v1",
        entrypoint="job.py:Job",
        class_name="Job",
        trigger_param="event",
        trigger=trigger,
        inputs=inputs,
        created_at=NOW,
        updated_at=NOW,
    )


def submit(**fields: Any) -> SubmitRun:
    return SubmitRun(request_id="r1", routine="job", **fields)


def upstream_run(
    run_id: str = "u1", status: str = "completed", routine: str = "train"
) -> dict[str, Any]:
    return {
        "id": run_id,
        "routine": routine,
        "run_number": 7,
        "status": status,
        "outputs": {"accuracy": 0.9},
        "artifacts": [],
    }


def refusal(decision: core.Decision) -> str:
    assert not decision.requests, decision
    [refused] = decision.refused
    assert refused.status == "failed"
    assert refused.run_id == "r1"
    return refused.error or ""


def test_a_dataset_routine_gets_the_pending_rows_since_its_cursor() -> None:
    cursor = DatasetCursor(dataset="photos", fired_version=3, seen_version=5, pending_records=40)

    decision = manual.decide_manual(
        definition(PHOTOS), submit(), NOW, manual.ManualContext(cursor=cursor)
    )

    [request] = decision.requests
    assert request.trigger_kind == "dataset"
    assert request.source == "manual"
    assert request.event == {
        "dataset": "photos",
        "from_version": 3,
        "to_version": 5,
        "added_records": 40,
    }


def test_a_dataset_range_asked_for_is_counted_by_the_runner() -> None:
    cursor = DatasetCursor(dataset="photos", fired_version=3, seen_version=5, pending_records=40)

    decision = manual.decide_manual(
        definition(PHOTOS),
        submit(from_version=0, to_version=2),
        NOW,
        manual.ManualContext(cursor=cursor),
    )

    # No announced count for this range: the runner reads it from the commit log.
    assert decision.requests[0].event == {"dataset": "photos", "from_version": 0, "to_version": 2}


@pytest.mark.parametrize(
    ("fields", "cursor", "expected"),
    [
        ({}, None, "no rows of dataset photos have been seen yet: give the range with"),
        ({"from_version": 4, "to_version": 2}, None, "versions (4, 2] are an empty range"),
        (
            {"to_version": 6},
            DatasetCursor(dataset="videos", fired_version=1, seen_version=1),
            "no rows of dataset photos have been seen yet",
        ),
    ],
)
def test_a_dataset_run_without_a_usable_range_is_refused(
    fields: dict[str, Any], cursor: DatasetCursor | None, expected: str
) -> None:
    decision = manual.decide_manual(
        definition(PHOTOS), submit(**fields), NOW, manual.ManualContext(cursor=cursor)
    )

    assert refusal(decision).startswith(expected)


def test_a_completion_routine_gets_the_upstream_runs_event() -> None:
    decision = manual.decide_manual(
        definition(AFTER_EVAL), submit(), NOW, manual.ManualContext(upstream=upstream_run())
    )

    [request] = decision.requests
    assert request.trigger_kind == "completion"
    assert request.event == {
        "routine": "train",
        "run_id": "u1",
        "run_number": 7,
        "status": "completed",
        "outputs": {"accuracy": 0.9},
        "artifacts": [],
    }


@pytest.mark.parametrize(
    ("fields", "context", "expected"),
    [
        (
            {},
            manual.ManualContext(),
            "no completed run of train has finished, so job has no upstream event: "
            "run it first or give --upstream RUN_ID",
        ),
        (
            {"upstream_run_id": "nope"},
            manual.ManualContext(),
            "run nope is not recorded: pick one with `mainspring runs list --routine train`",
        ),
        (
            {"upstream_run_id": "u1"},
            manual.ManualContext(upstream=upstream_run(routine="other")),
            "run u1 is of other, but job waits on train: give --upstream a run of train",
        ),
        (
            {"upstream_run_id": "u1"},
            manual.ManualContext(upstream=upstream_run(status="running")),
            "run u1 is still running: wait for it to finish",
        ),
        (
            {},
            manual.ManualContext(upstream_problem="the recorder does not answer"),
            "the recorder does not answer",
        ),
    ],
)
def test_a_completion_run_without_an_upstream_is_refused(
    fields: dict[str, Any], context: manual.ManualContext, expected: str
) -> None:
    assert refusal(
        manual.decide_manual(definition(AFTER_EVAL), submit(**fields), NOW, context)
    ) == (expected)


def test_the_latest_upstream_is_the_newest_finished_run_the_trigger_accepts() -> None:
    runs = [
        upstream_run("running", status="running"),
        upstream_run("failed", status="failed"),
        upstream_run("other", routine="other"),
        upstream_run("done"),
        upstream_run("older"),
    ]

    assert manual.latest_upstream(runs, AFTER_EVAL) == upstream_run("done")
    assert manual.latest_upstream(runs, CompletionTrigger(routine="train"))["id"] == "failed"  # type: ignore[index]
    assert manual.latest_upstream(runs[:3], AFTER_EVAL) is None


def test_a_schedule_routine_gets_a_tick_at_now() -> None:
    decision = manual.decide_manual(definition(ScheduleTrigger(every="1h")), submit(), NOW)

    [request] = decision.requests
    assert request.trigger_kind == "schedule"
    assert request.event == {"scheduled_at": NOW.isoformat(), "fired_at": NOW.isoformat()}


def test_a_poll_routine_gets_the_payload_and_its_keys_become_inputs() -> None:
    poll = PollTrigger(fn="job:check", every="1m")
    job = definition(
        poll,
        city=InputSchema(type="str", default="Rome"),
        days=InputSchema(type="int", default=1),
    )

    decision = manual.decide_manual(
        job, submit(payload={"city": "Oslo", "days": 2, "extra": 1}, inputs={"days": 3}), NOW
    )

    [request] = decision.requests
    assert request.event == {
        "scheduled_at": NOW.isoformat(),
        "payload": {"city": "Oslo", "days": 2, "extra": 1},
    }
    assert request.inputs == {"city": "Oslo", "days": 3}


def test_a_poll_routine_without_a_payload_gets_an_empty_one() -> None:
    decision = manual.decide_manual(
        definition(PollTrigger(fn="job:check", every="1m")), submit(), NOW
    )

    assert decision.requests[0].event["payload"] == {}


@pytest.mark.parametrize(
    ("trigger", "fields", "expected"),
    [
        (
            ScheduleTrigger(every="1h"),
            {"from_version": 1},
            "--from-version applies to dataset routines; job has a schedule trigger: leave it out",
        ),
        (
            PHOTOS,
            {"upstream_run_id": "u1"},
            "--upstream applies to completion routines; job has a dataset trigger: leave it out",
        ),
        (
            AFTER_EVAL,
            {"payload": {}},
            "--payload applies to poll routines; job has a completion trigger: leave it out",
        ),
    ],
)
def test_an_option_for_another_trigger_is_refused(
    trigger: AnyTrigger, fields: dict[str, Any], expected: str
) -> None:
    context = manual.ManualContext(upstream=upstream_run())
    assert refusal(manual.decide_manual(definition(trigger), submit(**fields), NOW, context)) == (
        expected
    )


def test_a_rerun_replays_the_original_event_and_names_the_original() -> None:
    original = {"dataset": "photos", "from_version": 1, "to_version": 2, "added_records": 5}
    rerun = submit(rerun_of="r0", trigger_kind="dataset", event=original, inputs={"n": 1})

    # No cursor is needed: the event is the original's, not the cursor's pending rows.
    decision = manual.decide_manual(
        definition(PHOTOS, n=InputSchema(type="int", default=0)), rerun, NOW
    )

    [request] = decision.requests
    assert (request.trigger_kind, request.event) == ("dataset", original)
    assert request.rerun_of == "r0"
    assert request.inputs == {"n": 1}


def test_the_recorder_keeps_what_a_rerun_repeats() -> None:
    from mainspring_services.recorder import core as recorder

    request = manual.decide_manual(
        definition(ScheduleTrigger(every="1h")),
        submit(
            rerun_of="r0", trigger_kind="schedule", event={"scheduled_at": "x", "fired_at": "x"}
        ),
        NOW,
    ).requests[0]

    assert recorder.changes_for_requested(request)["rerun_of"] == "r0"


def test_an_event_comes_with_its_kind() -> None:
    with pytest.raises(ValueError, match="trigger_kind and event are given together"):
        submit(event={"scheduled_at": "x"})
