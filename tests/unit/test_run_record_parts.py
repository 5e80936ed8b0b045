"""The pure parts of the run record, run logs and clean-up: what is kept, cut and deleted."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mainspring.apps.cli import build_parser, main
from mainspring.apps.cli.runs import run_options
from mainspring.apps.present import resources_text, run_options_text
from mainspring.contract.messages import (
    DeleteRuns,
    RequestRun,
    ResolvedRunOptions,
    RunCompleted,
    RunOptions,
    RunResources,
    SubmitRun,
)
from mainspring.storage.artifacts import delete_run_files
from mainspring.storage.runlogs import BoundedLog, read_log, store_log
from mainspring_services.recorder.core import (
    changes_for,
    merge,
    retention_cutoff,
    split_deletable,
)

T0 = datetime(2026, 3, 1, 9, tzinfo=UTC)


def test_a_bounded_log_keeps_the_first_bytes_and_marks_what_it_cut() -> None:
    log = BoundedLog(10)

    kept = [log.take(b"hello "), log.take(b"world!"), log.take(b"more")]

    assert kept == [b"hello ", b"worl", b""]
    assert (log.kept, log.dropped) == (10, 6)
    assert b"keeps the first 10 bytes; 6 more were dropped" in log.cut_marker()
    assert b"MAINSPRING_RUN_LOG_MAX_BYTES" in log.cut_marker()


def test_a_log_under_its_cap_has_no_marker() -> None:
    log = BoundedLog(100)
    assert log.take(b"short") == b"short"
    assert log.cut_marker() == b""


def test_the_request_carries_invocation_execution_and_options_into_the_row() -> None:
    request = RequestRun(
        run_id="r1",
        routine="eval",
        routine_version="d1",
        entrypoint="eval.py:Eval",
        run_number=3,
        source="manual",
        trigger_kind="schedule",
        requested_at=T0,
        options=ResolvedRunOptions(statistics=True, execution="in_memory"),
        invocation="workflow",
    )

    _, row = changes_for(request, T0)

    assert (row["invocation"], row["execution"]) == ("workflow", "in_memory")
    assert (row["statistics"], row["previews"], row["store_artifacts"]) == (True, False, True)


def test_a_submit_records_its_options_before_the_dispatcher_decides() -> None:
    submitted = SubmitRun(
        request_id="r1", routine="eval", options=RunOptions(previews=True, store_artifacts=False)
    )

    _, row = changes_for(submitted, T0)

    assert (row["invocation"], row["execution"]) == ("direct", "background")
    assert (row["previews"], row["store_artifacts"]) == (True, False)


def test_the_first_completion_keeps_its_resources_and_log() -> None:
    def completed(peak: int, log: str) -> dict[str, object]:
        event = RunCompleted(
            run_id="r1",
            routine="eval",
            status="completed",
            finished_at=T0,
            resources=RunResources(peak_memory_bytes=peak, cpu_seconds=0.5, wall_seconds=1.0),
            log_uri=log,
        )
        return changes_for(event, T0)[1]

    first = merge(None, completed(100, "runs/r1/logs/output.log"))
    again = merge(first, completed(999, "elsewhere"))

    assert (again["peak_memory_bytes"], again["cpu_seconds"], again["wall_seconds"]) == (
        100,
        0.5,
        1.0,
    )
    assert again["log_uri"] == "runs/r1/logs/output.log"


def test_only_finished_runs_may_be_deleted() -> None:
    statuses = {"a": "completed", "b": "running", "c": "failed", "d": "queued", "e": "cancelled"}

    assert split_deletable(statuses) == (["a", "c", "e"], ["b", "d"])


@pytest.mark.parametrize(
    ("days", "cutoff"),
    [(None, None), (30, T0 - timedelta(days=30)), (0.5, T0 - timedelta(hours=12))],
)
def test_the_retention_cutoff_is_now_minus_the_days_kept(
    days: float | None, cutoff: datetime | None
) -> None:
    assert retention_cutoff(T0, days) == cutoff


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({}, "one of the two"),
        ({"run_ids": ["a"], "routine": "r"}, "one of the two"),
        ({"run_ids": ["a"], "status": "failed"}, "narrow a routine's runs"),
        ({"routine": "r", "status": "running"}, "status"),
    ],
)
def test_a_delete_request_names_runs_one_way(fields: dict[str, object], reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        DeleteRuns.model_validate(fields)


def test_a_log_is_stored_under_the_run_and_an_empty_one_is_not(tmp_path: Path) -> None:
    root = str(tmp_path / "artifacts")
    (tmp_path / "a.log").write_bytes(b"hello\n")
    (tmp_path / "b.log").write_bytes(b"")

    stored = store_log(root, "a", tmp_path / "a.log")

    assert stored == f"{tmp_path}/artifacts/runs/a/logs/output.log"
    assert read_log(root, "a") == b"hello\n"
    assert store_log(root, "b", tmp_path / "b.log") is None
    assert read_log(root, "b") is None
    assert delete_run_files(root, "a") is True
    assert read_log(root, "a") is None
    assert delete_run_files(root, "a") is False


@pytest.mark.parametrize(("flags", "invocation"), [([], "direct"), (["--interactive"], "workflow")])
def test_inputs_asked_for_one_by_one_are_a_workflow_invocation(
    flags: list[str], invocation: str
) -> None:
    args = build_parser().parse_args(["run", "eval", *flags])

    assert run_options(args)["invocation"] == invocation


def test_the_record_prints_options_and_resources_it_knows() -> None:
    run = {
        "statistics": True,
        "previews": False,
        "peak_memory_bytes": 3 * 2**20,
        "cpu_seconds": 0.5,
    }

    assert run_options_text(run) == "statistics on, previews off"
    assert resources_text(run) == "peak memory 3.0MiB, CPU 0.50s"
    assert (run_options_text({}), resources_text({})) == ("", "")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["runs", "delete"], "name the runs to delete: run ids, or --routine N"),
        (["runs", "delete", "a", "--routine", "r"], "name the runs to delete"),
        (["runs", "delete", "a", "--status", "failed"], "--status and --before narrow --routine"),
        (["runs", "delete", "--routine", "r", "--before", "soon"], "--before 'soon' is not an ISO"),
    ],
)
def test_runs_delete_refuses_an_unclear_selection_in_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert message in error
    assert error.count("\n") == 1
