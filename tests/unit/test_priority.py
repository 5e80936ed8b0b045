"""Run priority: chosen per run or per routine, a subject per priority, and the order a runner
with free slots takes requests in."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from mainspring import Routine, on_complete
from mainspring.apps.cli import build_parser
from mainspring.apps.ingress import IngressError, run_request
from mainspring.contract import subjects
from mainspring.contract.messages import PRIORITIES, RequestRun, ResolvedRunOptions, RunOptions
from mainspring.sdk.routine import ContractError, inspect_contract
from mainspring.storage.registry import RoutineOptions, routine_options
from mainspring_services.dispatcher import core, fence
from mainspring_services.runner import core as runner
from tests.messages import a_request

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class Urgent(Routine):
    priority = "high"

    def run(self, event: Any = on_complete("upstream")) -> None:
        return None


class Whenever(Routine):
    priority = "someday"

    def run(self, event: Any = on_complete("upstream")) -> None:
        return None


@pytest.mark.parametrize(
    ("asked", "routines", "resolved"),
    [
        (None, "normal", "normal"),
        (None, "low", "low"),
        ("high", "low", "high"),
        ("low", "high", "low"),
        ("normal", "high", "normal"),
    ],
)
def test_the_callers_priority_beats_the_routines(asked: Any, routines: Any, resolved: str) -> None:
    options = core.resolve_options(RunOptions(priority=asked), RoutineOptions(priority=routines))

    assert options.priority == resolved


def test_a_run_is_normal_unless_someone_says_otherwise() -> None:
    assert ResolvedRunOptions().priority == "normal"
    assert RoutineOptions().priority == "normal"
    assert Routine.priority == "normal"


def test_a_routine_declares_its_priority_and_a_wrong_one_names_the_fix() -> None:
    inspect_contract(Urgent)
    assert routine_options(Urgent).priority == "high"

    with pytest.raises(ContractError) as raised:
        inspect_contract(Whenever)

    assert str(raised.value) == (
        "Whenever.priority is 'someday': set it to 'high', 'normal' (the default) or 'low'"
    )


def test_each_priority_has_its_subject_and_normal_keeps_run_requested() -> None:
    assert subjects.run_requested_subject("normal") == "run.requested"
    assert subjects.run_requested_subject("high") == "run.requested.high"
    assert subjects.run_requested_subject("low") == "run.requested.low"
    assert all(subjects.is_run_requested(s) for s in subjects.RUN_REQUESTED_SUBJECTS)
    assert not subjects.is_run_requested("run.requested.other")
    with pytest.raises(ValueError, match="use high, normal or low"):
        subjects.run_requested_subject("urgent")


def test_the_runner_takes_the_queues_high_first_with_a_durable_each() -> None:
    assert [p for p, _, _ in subjects.RUN_QUEUES] == list(PRIORITIES)
    assert len({name for _, _, name in subjects.RUN_QUEUES}) == 3
    assert (
        dict((p, name) for p, _, name in subjects.RUN_QUEUES)["normal"] == subjects.RUNNER_CONSUMER
    )


def request(run_id: str, priority: Any) -> RequestRun:
    return a_request(
        run_id,
        routine="embed",
        source="trigger",
        trigger_kind="dataset",
        requested_at=NOW,
        options=ResolvedRunOptions(priority=priority),
    )


def test_a_redelivered_trigger_looks_for_each_request_where_its_priority_put_it() -> None:
    requests = [request("a", "high"), request("b", "normal"), request("c", "high")]

    assert fence.by_subject(requests, None) == {
        "run.requested.high": {"a", "c"},
        "run.requested": {"b"},
    }
    # In-memory runs all go to one subject, whatever their priority.
    assert fence.by_subject(requests, subjects.RUN_IN_MEMORY) == {
        subjects.RUN_IN_MEMORY: {"a", "b", "c"}
    }


@pytest.mark.parametrize(
    ("free", "held", "emptied", "step"),
    [
        # No free slot: nothing is pulled.
        (0, {}, set(), runner.IntakeStep("full")),
        (0, {"high": 1}, set(), runner.IntakeStep("full")),
        # High first, as many as there are free slots (capped).
        (3, {}, set(), runner.IntakeStep("fetch", "high", 3)),
        (100, {}, set(), runner.IntakeStep("fetch", "high", 64)),
        # Then normal, then low, once the higher queues answered short.
        (2, {}, {"high"}, runner.IntakeStep("fetch", "normal", 2)),
        (1, {}, {"high", "normal"}, runner.IntakeStep("fetch", "low", 1)),
        # Every queue empty: wait for a request.
        (2, {}, {"high", "normal", "low"}, runner.IntakeStep("wait")),
        # A request held here starts before its own queue is asked...
        (1, {"normal": 1}, {"high"}, runner.IntakeStep("start", "normal")),
        # ...but not before a higher queue.
        (1, {"low": 1}, set(), runner.IntakeStep("fetch", "high", 1)),
        (1, {"low": 1}, {"high", "normal"}, runner.IntakeStep("start", "low")),
        (1, {"low": 1, "high": 1}, set(), runner.IntakeStep("start", "high")),
    ],
)
def test_the_intake_takes_high_before_normal_before_low_and_no_more_than_its_slots(
    free: int, held: dict[str, int], emptied: set[str], step: runner.IntakeStep
) -> None:
    assert runner.intake_step(free, 64, held, emptied) == step


def test_a_held_request_waits_behind_higher_priority_runs_only() -> None:
    assert runner.behind_higher_priority("low", "high")
    assert runner.behind_higher_priority("normal", "high")
    assert runner.behind_higher_priority("low", "normal")
    assert not runner.behind_higher_priority("high", "low")
    assert not runner.behind_higher_priority("normal", "normal")


def test_the_cli_takes_a_priority_and_refuses_another_value(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert build_parser().parse_args(["run", "job", "--priority", "high"]).priority == "high"
    assert build_parser().parse_args(["run", "job"]).priority is None

    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "job", "--priority", "urgent"])

    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--priority" in error
    assert "'high', 'normal', 'low'" in error


def test_the_http_api_takes_a_priority_and_refuses_another_value() -> None:
    submitted = run_request("embed", {"priority": "low"}, "id-1", "http")
    assert submitted.options.priority == "low"
    assert run_request("embed", {}, "id-1", "http").options.priority is None

    with pytest.raises(IngressError) as raised:
        run_request("embed", {"priority": "urgent"}, "id-1", "http")

    assert raised.value.status == 422
    assert str(raised.value) == "priority 'urgent': use high, normal or low"
