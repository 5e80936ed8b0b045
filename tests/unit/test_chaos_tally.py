"""The chaos suite's counting: lost, doubled, re-executed after settling, and retried runs."""

from __future__ import annotations

import json

from tests.chaos.tally import Execution, read_executions, tally


def run(run_id: str, status: str = "completed", exec_id: str | None = None) -> dict[str, object]:
    return {"id": run_id, "status": status, "outputs": {"exec": exec_id or f"x-{run_id}"}}


def once(kind: str, key: str, run_id: str, start: float = 0.0, exec_id: str = "") -> Execution:
    return Execution(kind, (key,), run_id, exec_id or f"x-{run_id}", start, start + 1.0)


def test_each_accepted_key_run_once_is_neither_lost_nor_doubled() -> None:
    result = tally(
        {"manual": {"a", "b"}},
        [once("manual", "a", "r1"), once("manual", "b", "r2")],
        [run("r1"), run("r2")],
    )
    assert (result.lost_count, result.doubled_count, result.mismatched) == (0, 0, [])
    assert result.triggers == 2


def test_a_key_without_execution_is_lost_and_a_key_in_two_runs_is_doubled() -> None:
    executions = [once("tick", "t1", "r1"), once("tick", "t1", "r2")]
    result = tally({"tick": {"t1", "t2"}}, executions, [run("r1"), run("r2")])
    assert result.lost == {"tick": ["t2"]}
    assert result.doubled == {"tick": ["t1"]}


def test_an_unaccepted_key_may_be_missing_but_never_doubled() -> None:
    executions = [once("manual", "maybe", "r1"), once("manual", "maybe", "r2")]
    result = tally({"manual": set()}, executions, [run("r1"), run("r2")])
    assert (result.lost_count, result.doubled_count) == (0, 1)


def test_a_run_executed_again_after_its_winner_ended_is_a_double_and_earlier_ones_retries() -> None:
    winner = once("manual", "a", "r1", start=10.0, exec_id="w")
    stalled = once("manual", "a", "r1", start=5.0, exec_id="s")  # a paused runner's attempt
    late = once("manual", "a", "r1", start=20.0, exec_id="l")  # after the outcome was known
    result = tally({"manual": {"a"}}, [stalled, winner, late], [run("r1", exec_id="w")])
    assert result.reexecuted == ["r1"]
    assert result.retried == 1
    assert result.doubled_count == 1


def test_the_database_must_match_the_executions() -> None:
    result = tally(
        {"manual": {"a"}},
        [once("manual", "a", "r1"), once("manual", "b", "ghost")],
        [run("r1", exec_id="other"), run("never", status="completed"), run("q", status="queued")],
    )
    assert sorted(m.split()[0] for m in result.mismatched) == ["ghost", "never", "r1"]
    assert result.not_terminal == ["q queued"]


def test_read_executions_skips_blank_lines() -> None:
    line = json.dumps(
        {"kind": "append", "keys": [1, 2], "run": "r", "exec": "e", "start": 1, "end": 2}
    )
    assert read_executions([line, ""]) == [Execution("append", ("1", "2"), "r", "e", 1.0, 2.0)]
