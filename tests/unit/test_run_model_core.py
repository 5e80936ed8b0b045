"""Pure run-model decisions: attempts, retries, queue reasons, lifecycle merges, state size."""

from __future__ import annotations

import signal
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from mainspring.contract.messages import RunCompleted, RunQueued, RunStarted
from mainspring.storage.state import StateTooLarge, encode_state
from mainspring_services.recorder import core as recorder
from mainspring_services.runner import core as runner

FAILED = runner.Outcome("failed", {}, "ValueError: bad")
COMPLETED = runner.Outcome("completed", {"n": 1})
CANCELLED = runner.Outcome("cancelled", {}, "cancelled by request")
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("outcome", "attempt", "retries", "expected"),
    [
        (FAILED, 1, 0, False),
        (FAILED, 1, 2, True),
        (FAILED, 2, 2, True),
        (FAILED, 3, 2, False),
        (COMPLETED, 1, 2, False),
        (CANCELLED, 1, 2, False),
    ],
)
def test_should_retry(outcome: runner.Outcome, attempt: int, retries: int, expected: bool) -> None:
    assert runner.should_retry(outcome, attempt, retries) is expected


@pytest.mark.parametrize(
    ("attempt", "retries", "lost"),
    [(1, 0, False), (2, 0, False), (3, 0, True), (4, 2, False), (5, 2, True)],
)
def test_a_run_past_its_attempt_budget_is_lost(attempt: int, retries: int, lost: bool) -> None:
    outcome = runner.lost_run_outcome(attempt, retries, ack_wait_s=30)

    assert (outcome is not None) is lost
    if outcome is not None:
        assert outcome.status == "failed"
        assert "runner lost" in (outcome.error or "")
        assert "30s" in (outcome.error or "")


@pytest.mark.parametrize(
    ("attempt", "backoff", "delay"), [(1, 1.0, 1.0), (2, 1.0, 2.0), (3, 0.5, 2.0), (30, 5.0, 600.0)]
)
def test_retry_delay_doubles_and_is_capped(attempt: int, backoff: float, delay: float) -> None:
    assert runner.retry_delay(attempt, backoff) == delay


@pytest.mark.parametrize(
    ("needed", "available", "total", "waits"),
    [
        (2**30, 4 * 2**30, 8 * 2**30, False),
        (6 * 2**30, 4 * 2**30, 8 * 2**30, True),
        (16 * 2**30, 4 * 2**30, 8 * 2**30, False),
    ],
)
def test_memory_reason(needed: int, available: int, total: int, waits: bool) -> None:
    reason = runner.memory_reason(needed, available, total)

    assert (reason is not None) is waits
    if reason:
        assert reason == "waiting for memory: needs 6144MiB, 4096MiB available on this runner"


def test_concurrency_reason_names_the_limit_and_holders() -> None:
    reason = runner.concurrency_reason("embed", 1, ["0123456789abcdef"])

    assert reason == "concurrency limit: embed allows 1 at a time (running: 01234567)"


def _queued(reason: str) -> dict[str, Any]:
    return recorder.changes_for_queued(RunQueued(run_id="r", routine="x", reason=reason, at=T0))


@pytest.mark.parametrize(
    ("current", "expected_status", "expected_reason"),
    [
        ({"status": "queued", "queue_reason": "waiting for a free runner slot"}, "queued", "limit"),
        ({"status": "running", "queue_reason": None}, "running", "limit"),
        ({"status": "completed", "queue_reason": None}, "completed", None),
    ],
)
def test_a_queue_reason_never_moves_a_run_back(
    current: dict[str, Any], expected_status: str, expected_reason: str | None
) -> None:
    merged = recorder.merge(current, _queued("limit"))

    assert merged["status"] == expected_status
    assert merged["queue_reason"] == expected_reason


def test_starting_clears_the_queue_reason_and_records_the_attempt() -> None:
    queued = recorder.merge(None, _queued("concurrency limit"))
    started = RunStarted(run_id="r", routine="x", runner="runner@h:1", attempt=2, started_at=T0)

    merged = recorder.merge(queued, recorder.changes_for_started(started))

    assert merged["status"] == "running"
    assert merged["queue_reason"] is None
    assert merged["attempt"] == 2
    assert merged["started_at"] == T0


def test_state_over_budget_is_refused_with_the_fix() -> None:
    assert encode_state({"cursor": 12}) == b'{"cursor": 12}'
    with pytest.raises(StateTooLarge, match="save data as artifacts"):
        encode_state({"blob": "x" * 70_000})


def _at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("started", "beat", "queue_reason", "watching_since", "stale"),
    [
        (0, 95, None, 0, False),  # heartbeats keep coming
        (0, 10, None, 0, True),  # heartbeats stopped 90s ago
        (0, None, None, 0, True),  # never heartbeated
        (95, None, None, 0, False),  # just started
        (0, None, None, 50, False),  # this recorder has listened for 50s only
        (0, None, "attempt 1 failed; retry 1 of 2 in 600s", 0, False),  # backing off
    ],
)
def test_stale_runs(
    started: float,
    beat: float | None,
    queue_reason: str | None,
    watching_since: float,
    stale: bool,
) -> None:
    beats = {} if beat is None else {"r": _at(beat)}

    found = recorder.stale_runs(
        [("r", _at(started), queue_reason)], beats, _at(watching_since), _at(100), 60
    )

    assert found == (["r"] if stale else [])


def test_a_stale_run_fails_with_the_reason_and_stays_failed() -> None:
    row = {"id": "r", "routine": "x", "run_number": 3, "hop": 2, "parent_run_id": "p"}
    completed = recorder.completion_for_stale({**row, "source": "trigger"}, 60, _at(100))
    stale = recorder.merge({"status": "running"}, recorder.changes_for_completed(completed))
    late = recorder.changes_for_completed(
        RunCompleted(run_id="r", routine="x", status="cancelled", finished_at=_at(200))
    )

    merged = recorder.merge(stale, late)

    assert merged["status"] == "failed"
    assert merged["finished_at"] == _at(100)
    assert merged["error"].startswith("no runner heartbeat for 60s")
    # Published like a runner's outcome: completion triggers see the run's number and chain.
    assert (completed.run_number, completed.hop, completed.parent_run_id) == (3, 2, "p")
    assert completed.message_id() == "completed:r"


def _snapshot(**changes: Any) -> runner.WorkerSnapshot:
    base: dict[str, Any] = {
        "cwd": "/srv",
        "environ": {"HOME": "/root", "MAINSPRING_RUN_ID": "r1"},
        "sys_path": ("/bundle", "/lib"),
        "signal_handlers": {"SIGTERM": signal.SIG_DFL, "SIGINT": signal.default_int_handler},
        "threads": {1: "MainThread"},
    }
    return runner.WorkerSnapshot(**{**base, **changes})


@pytest.mark.parametrize(
    ("after", "expected"),
    [
        ({}, []),
        ({"threads": {1: "MainThread", 7: "poller"}}, ["1 thread(s) still running (poller)"]),
        ({"threads": {}}, []),  # a thread that ended is no leftover
        ({"cwd": "/tmp"}, ["working directory changed to /tmp"]),
        (
            {"environ": {"HOME": "/x", "MAINSPRING_RUN_ID": "r1", "TOKEN": "t"}},
            ["environment changed (HOME, TOKEN)"],
        ),
        ({"environ": {"HOME": "/root"}}, ["environment changed (MAINSPRING_RUN_ID)"]),
        ({"sys_path": ("/bundle", "/lib", "/extra")}, ["sys.path changed"]),
        (
            {"signal_handlers": {"SIGTERM": print, "SIGINT": signal.default_int_handler}},
            ["signal handlers changed (SIGTERM)"],
        ),
        (
            {"cwd": "/", "sys_path": ()},
            ["working directory changed to /", "sys.path changed"],
        ),
    ],
)
def test_leftovers_name_what_a_run_changed_in_its_worker(
    after: dict[str, Any], expected: list[str]
) -> None:
    assert runner.leftovers(_snapshot(), _snapshot(**after)) == expected


def _outcome(error: str | None, status: str = "failed", phase: str = "run") -> runner.Outcome:
    return runner.Outcome(status, {}, error, phase="start" if phase == "start" else "run")


@pytest.mark.parametrize(
    ("outcome", "exited", "fault"),
    [
        (COMPLETED, False, None),
        (FAILED, False, None),  # an ordinary exception leaves the interpreter intact
        (COMPLETED, True, "the worker process ended"),
        (_outcome("routine process killed by SIGSEGV"), True, "the worker process ended"),
        (CANCELLED, False, "cancelled"),
        (_outcome(runner.MEMORY_EXCEEDED), False, runner.MEMORY_EXCEEDED),
        (_outcome("timed out after 3s"), False, "timed out after 3s"),
        (_outcome("routine called sys.exit(3)"), False, "the routine called sys.exit()"),
        (_outcome("cannot import r.py", phase="start"), False, "the routine failed to load"),
    ],
)
def test_fault_of_a_run(outcome: runner.Outcome, exited: bool, fault: str | None) -> None:
    assert runner.fault_of(outcome, worker_exited=exited) == fault


def _report(**changes: Any) -> runner.WorkerReport:
    base: dict[str, Any] = {
        "fault": None,
        "leftovers": [],
        "live_children": [],
        "rss_growth": 0,
        "runs_served": 1,
    }
    return runner.WorkerReport(**{**base, **changes})


@pytest.mark.parametrize(
    ("report", "reason"),
    [
        (_report(), None),
        (_report(runs_served=99, rss_growth=100 * 2**20), None),
        (_report(fault="cancelled"), "fault: cancelled"),
        (_report(live_children=[41, 42]), "2 child process(es) still alive (41, 42)"),
        (
            _report(leftovers=["sys.path changed", "working directory changed to /"]),
            "sys.path changed; working directory changed to /",
        ),
        (
            _report(rss_growth=300 * 2**20),
            "memory grew 300MiB over its baseline (bound 256MiB)",
        ),
        (_report(runs_served=100), "served 100 runs (max_runs_per_worker 100)"),
        (_report(fault="cancelled", live_children=[41]), "fault: cancelled"),
    ],
)
def test_recycle_reason(report: runner.WorkerReport, reason: str | None) -> None:
    assert runner.recycle_reason(report, max_runs=100, max_rss_growth=256 * 2**20) == reason


@pytest.mark.parametrize(
    ("used", "baseline", "over"),
    [(180 * 2**20, 100 * 2**20, False), (201 * 2**20, 100 * 2**20, True), (90 * 2**20, 0, False)],
)
def test_a_memory_limit_is_growth_over_the_baseline(used: int, baseline: int, over: bool) -> None:
    assert runner.memory_over_limit(used, baseline, limit=100 * 2**20) is over
