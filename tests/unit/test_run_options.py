"""A run's options: what its caller asks, resolved with its routine's settings in one place."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from mainspring.client import repeated_options
from mainspring.contract.messages import ResolvedRunOptions, RunOptions, SubmitRun
from mainspring.sdk.triggers import ScheduleTrigger
from mainspring.storage.registry import RoutineDefinition, RoutineOptions
from mainspring_services.dispatcher import core, manual
from mainspring_services.recorder import core as recorder

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
MiB = 2**20
ROUTINE = RoutineOptions(
    memory_limit=512 * MiB,
    isolation="process",
    timeout_s=30.0,
    retries=2,
    retry_backoff_s=5.0,
    max_concurrent=1,
)


@pytest.mark.parametrize(
    ("asked", "memory_limit", "isolation"),
    [
        # None leaves each setting to the routine.
        (RunOptions(), 512 * MiB, "process"),
        # An explicit value beats the routine's, one setting at a time.
        (RunOptions(memory_limit=64 * MiB), 64 * MiB, "process"),
        (RunOptions(isolation="worker"), 512 * MiB, "worker"),
        (RunOptions(memory_limit=64 * MiB, isolation="worker"), 64 * MiB, "worker"),
        # 0 is explicit too: no limit for this run, whatever the routine's.
        (RunOptions(memory_limit=0), 0, "process"),
    ],
)
def test_an_explicit_option_beats_the_routines_and_none_means_the_routines(
    asked: RunOptions, memory_limit: int, isolation: str
) -> None:
    resolved = core.resolve_options(asked, ROUTINE)

    assert (resolved.memory_limit, resolved.isolation) == (memory_limit, isolation)


def test_timeout_retries_and_concurrency_are_the_routines_and_the_rest_as_asked() -> None:
    asked = RunOptions(execution="in_memory", statistics=True, previews=True, store_artifacts=False)

    resolved = core.resolve_options(asked, ROUTINE)

    assert resolved == ResolvedRunOptions(
        memory_limit=512 * MiB,
        isolation="process",
        execution="in_memory",
        statistics=True,
        previews=True,
        store_artifacts=False,
        timeout_s=30.0,
        retries=2,
        retry_backoff_s=5.0,
        max_concurrent=1,
    )


def test_a_routine_without_settings_leaves_a_run_unlimited_in_a_worker() -> None:
    resolved = core.resolve_options(RunOptions(), RoutineOptions())

    assert resolved == ResolvedRunOptions()
    assert (resolved.memory_limit, resolved.isolation, resolved.timeout_s) == (None, "worker", None)


def test_the_options_a_run_is_submitted_with_reach_its_request_resolved() -> None:
    definition = RoutineDefinition(
        name="job",
        version="v1",
        entrypoint="job.py:Job",
        class_name="Job",
        trigger_param="event",
        trigger=ScheduleTrigger(every="1m"),
        options=ROUTINE,
        created_at=NOW,
        updated_at=NOW,
    )
    asked = RunOptions(memory_limit=64 * MiB, statistics=True)
    submitted = SubmitRun(request_id="r1", routine="job", options=asked)

    [request] = manual.decide_manual(definition, submitted, NOW).requests

    assert request.options == core.resolve_options(asked, ROUTINE)


def test_the_row_keeps_the_options_flat_and_leaves_isolation_to_the_runner() -> None:
    resolved = core.resolve_options(RunOptions(execution="in_memory", previews=True), ROUTINE)

    columns = recorder.option_columns(resolved)

    assert columns == {
        "memory_limit": 512 * MiB,
        "timeout_s": 30.0,
        "execution": "in_memory",
        "statistics": False,
        "previews": True,
        "store_artifacts": True,
        "priority": "normal",
    }


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        (
            {
                "memory_limit": 64 * MiB,
                "statistics": True,
                "previews": None,
                "store_artifacts": False,
            },
            RunOptions(memory_limit=64 * MiB, statistics=True, store_artifacts=False),
        ),
        # Isolation and execution say how the original ran: a rerun goes to a runner afresh.
        ({"isolation": "process", "execution": "in_memory"}, RunOptions()),
    ],
)
def test_a_rerun_repeats_the_memory_limit_and_artifact_options(
    row: dict[str, Any], expected: RunOptions
) -> None:
    assert repeated_options(row) == expected
