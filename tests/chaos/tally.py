"""Counting a chaos run: what the routines did (their side-effect file) against what was accepted
and what the database says. Pure: no bus, no clock."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

TERMINAL = frozenset({"completed", "failed", "cancelled"})


@dataclass(frozen=True)
class Execution:
    """One execution of a routine's code, as the routine itself wrote it down."""

    kind: str
    keys: tuple[str, ...]
    run_id: str
    exec_id: str
    started: float
    ended: float


def read_executions(lines: Iterable[str]) -> list[Execution]:
    """The side-effect file's lines (one JSON object per execution)."""
    found = []
    for line in lines:
        if not line.strip():
            continue
        row = json.loads(line)
        found.append(
            Execution(
                row["kind"],
                tuple(str(k) for k in row["keys"]),
                row["run"],
                row["exec"],
                float(row["start"]),
                float(row["end"]),
            )
        )
    return found


@dataclass
class Tally:
    """Per kind of trigger: how many were accepted, and which were lost or doubled."""

    accepted: dict[str, int] = field(default_factory=dict)
    lost: dict[str, list[str]] = field(default_factory=dict)
    doubled: dict[str, list[str]] = field(default_factory=dict)
    runs: int = 0
    not_terminal: list[str] = field(default_factory=list)
    # Runs whose code ran again after their outcome was already known: the duplicate a
    # lost ack or a redelivered request causes when nothing fences it.
    reexecuted: list[str] = field(default_factory=list)
    # A second attempt of a run whose first never reported (runner killed or paused past
    # the ack wait): by design, and its outcome is settled once.
    retried: int = 0
    mismatched: list[str] = field(default_factory=list)

    @property
    def triggers(self) -> int:
        """Every accepted trigger."""
        return sum(self.accepted.values())

    @property
    def lost_count(self) -> int:
        """Accepted triggers that produced no run."""
        return sum(len(v) for v in self.lost.values())

    @property
    def doubled_count(self) -> int:
        """Triggers that produced two runs, and runs executed again after they ended."""
        return sum(len(v) for v in self.doubled.values()) + len(self.reexecuted)

    def summary(self) -> str:
        """The figures, one line each."""
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(self.accepted.items()))
        return "\n".join(
            [
                f"triggers: {self.triggers} ({kinds})",
                f"runs: {self.runs} (re-attempted after a lost runner: {self.retried})",
                f"lost: {self.lost_count} {dict((k, v[:5]) for k, v in self.lost.items() if v)}",
                f"doubled: {self.doubled_count} "
                f"{dict((k, v[:5]) for k, v in self.doubled.items() if v)} "
                f"re-executed after settling: {self.reexecuted[:5]}",
                f"not terminal: {len(self.not_terminal)} {self.not_terminal[:5]}",
                f"database vs side effects: {len(self.mismatched)} {self.mismatched[:5]}",
            ]
        )


def tally(
    accepted: dict[str, set[str]], executions: list[Execution], runs: list[dict[str, Any]]
) -> Tally:
    """Compare the accepted trigger keys per kind with the executions the routines wrote down
    and the recorded runs (each with `id`, `status`, `outputs`).

    Lost is an accepted key no execution saw. Doubled is any key, accepted or not (a submit
    never acknowledged, a tick outside the window), seen by two runs: at most once holds
    for every trigger, exactly once for the accepted ones.
    """
    result = Tally(accepted={kind: len(keys) for kind, keys in accepted.items()}, runs=len(runs))
    runs_of_key: dict[tuple[str, str], set[str]] = defaultdict(set)
    for execution in executions:
        for key in execution.keys:
            runs_of_key[(execution.kind, key)].add(execution.run_id)
    for kind, keys in accepted.items():
        result.lost[kind] = sorted(k for k in keys if not runs_of_key.get((kind, k)))
    for (kind, key), run_ids in runs_of_key.items():
        if len(run_ids) > 1:
            result.doubled.setdefault(kind, []).append(key)
    result.not_terminal = [f"{r['id']} {r['status']}" for r in runs if r["status"] not in TERMINAL]
    _compare_with_database(result, executions, {run["id"]: run for run in runs})
    return result


def _compare_with_database(
    result: Tally, executions: list[Execution], recorded: dict[str, dict[str, Any]]
) -> None:
    by_run: dict[str, list[Execution]] = defaultdict(list)
    for execution in executions:
        by_run[execution.run_id].append(execution)
    for run_id, done in by_run.items():
        found = recorded.get(run_id)
        if found is None:
            result.mismatched.append(f"{run_id} ran but is not recorded")
            continue
        # The execution whose outcome the system settled names itself in the run's outputs.
        winner = (found.get("outputs") or {}).get("exec")
        won = [e for e in done if e.exec_id == winner]
        if found["status"] == "completed" and not won:
            result.mismatched.append(f"{run_id} completed, but not by any execution written down")
        late = [e for e in done if won and e.started > won[0].ended]
        if late:
            result.reexecuted.append(run_id)
        result.retried += len(done) - 1 - len(late)
    for run_id, run in recorded.items():
        if run["status"] == "completed" and run_id not in by_run:
            result.mismatched.append(f"{run_id} recorded completed, but never ran")
