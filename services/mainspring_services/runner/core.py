"""Pure decisions of the runner: what a finished child process means, retry delays."""

from __future__ import annotations

import signal
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from mainspring.contract.messages import PRIORITIES, RunPhase
from mainspring.storage.capacity import RunnerCapacity, mebibytes

MEMORY_EXCEEDED = "memory limit exceeded"


@dataclass(frozen=True)
class Outcome:
    """How a run ended, as recorded."""

    status: str
    outputs: dict[str, Any]
    error: str | None = None
    traceback: str | None = None
    phase: RunPhase = "run"
    # A DAG run's node table (DagRecord as JSON), None for a routine's run.
    dag: dict[str, Any] | None = None


def with_output_not_kept(outcome: Outcome, problem: str | None) -> Outcome:
    """The outcome of a run whose output could not be stored (`problem`: why, or None).

    A run that otherwise completed fails with the reason, its outputs kept: a full or
    unwritable store must be seen when it happens, not when someone asks for the log. A run
    that failed already keeps its own error first.
    """
    if problem is None:
        return outcome
    if outcome.status == "completed":
        return Outcome("failed", outcome.outputs, problem, phase=outcome.phase, dag=outcome.dag)
    error = f"{outcome.error}\n{problem}" if outcome.error else problem
    return Outcome(
        outcome.status, outcome.outputs, error, outcome.traceback, outcome.phase, outcome.dag
    )


def describe_exit(returncode: int) -> str:
    """Why a child ended without reporting a result."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        crash = (
            " (the routine crashed the interpreter)"
            if name in ("SIGSEGV", "SIGBUS", "SIGABRT", "SIGILL")
            else ""
        )
        return f"routine process killed by {name}{crash}"
    return f"routine process exited with code {returncode} without a result (os._exit?)"


def outcome_of(
    result: dict[str, Any] | None,
    returncode: int,
    *,
    cancelled: bool,
    timed_out_after: float | None,
    memory_exceeded: bool,
    log_tail: str,
) -> Outcome:
    """Turn what the child reported (or didn't) into the run's terminal status."""
    if cancelled:
        return Outcome("cancelled", {}, "cancelled by request")
    if memory_exceeded:
        return Outcome("failed", {}, MEMORY_EXCEEDED)
    if timed_out_after is not None:
        return Outcome("failed", {}, f"timed out after {timed_out_after:g}s")
    if result is not None:
        return Outcome(
            str(result.get("status", "failed")),
            dict(result.get("outputs") or {}),
            result.get("error"),
            result.get("traceback"),
            "start" if result.get("phase") == "start" else "run",
            result.get("dag"),
        )
    reason = describe_exit(returncode)
    return Outcome("failed", {}, reason, log_tail or None)


def memory_over_limit(used: int, baseline: int, limit: int) -> bool:
    """Is a run over its memory limit? The limit is its growth over its worker's baseline."""
    return used - baseline > limit


def retry_delay(attempt: int, backoff_s: float) -> float:
    """Exponential backoff between attempts, capped at ten minutes."""
    return float(min(backoff_s * (2 ** max(0, attempt - 1)), 600.0))


# A runner killed mid-run loses its attempt; one spare attempt beyond `retries` lets another
# runner finish the run instead of failing it for a fault that was not the routine's.
LOST_RUNNER_SPARE_ATTEMPTS = 1


def max_attempts(retries: int) -> int:
    """Attempts a run may start: the first, its retries, and the spare for a lost runner."""
    return max(0, retries) + 1 + LOST_RUNNER_SPARE_ATTEMPTS


def lost_run_outcome(attempt: int, retries: int, ack_wait_s: float) -> Outcome | None:
    """Past the attempt budget, earlier runners died holding the run: fail it, say why."""
    if attempt <= max_attempts(retries):
        return None
    lost = attempt - 1
    return Outcome(
        "failed",
        {},
        f"runner lost: {lost} attempt(s) ended without a result because the runner holding "
        f"the run stopped heartbeating for {ack_wait_s:g}s (killed or stalled); giving up",
    )


def should_retry(outcome: Outcome, attempt: int, retries: int) -> bool:
    """A failed attempt is retried while attempts remain; cancelled and completed never are."""
    return outcome.status == "failed" and attempt <= retries


def retry_reason(outcome: Outcome, attempt: int, retries: int, delay_s: float) -> str:
    """The queue reason shown while a failed attempt waits for its retry."""
    return (
        f"attempt {attempt} failed ({outcome.error}); retry {attempt} of {retries} in {delay_s:g}s"
    )


def concurrency_reason(routine: str, limit: int, holders: list[str]) -> str:
    """The queue reason of a run held back by its routine's max_concurrent."""
    running = ", ".join(h[:8] for h in holders) or "other runs"
    return f"concurrency limit: {routine} allows {limit} at a time (running: {running})"


def memory_reason(needed: int, available: int, total: int) -> str | None:
    """The queue reason of a run whose memory limit does not fit this runner now (None: fits).

    A limit larger than the whole machine can never fit: such a run starts and meets its
    limit (or not) instead of waiting for ever.
    """
    if needed <= available or needed > total:
        return None
    return (
        f"waiting for memory: needs {needed // 2**20}MiB, "
        f"{available // 2**20}MiB available on this runner"
    )


def memory_hold_reason(
    needed: int, available: int, total: int, host: str, others: list[RunnerCapacity]
) -> str | None:
    """The queue reason of a run this runner holds for memory, told from every live runner
    (None: it fits here now).

    The decision is this runner's own (memory_reason); the reason names the runner with the
    most memory available now, this one (`available` on `host`, read just now) among the
    others' registry entries, when none of them has enough either. When another runner has
    enough, the run goes to it on a later delivery and this runner's view says why it waits.
    """
    local = memory_reason(needed, available, total)
    if local is None or not others:
        return local
    here = (available, host)
    best = max([here, *((r.memory_available, r.host) for r in others)], key=lambda c: c[0])
    if best[0] >= needed:
        return local
    return (
        f"no runner has that much memory available now: needs {mebibytes(needed)} MiB, "
        f"the most available is {mebibytes(best[0])} MiB on {best[1]}"
    )


# --- reusable workers -----------------------------------------------------------------------

# invoke() reports a routine's sys.exit() with this prefix; the worker survives it, but an
# interpreter whose code asked to exit is not trusted with the next run.
SYS_EXIT_PREFIX = "routine called sys.exit("


@dataclass(frozen=True)
class WorkerSnapshot:
    """Process-wide state a run could leave changed behind it in a reused worker."""

    cwd: str
    environ: dict[str, str]
    sys_path: tuple[str, ...]
    signal_handlers: dict[str, object]
    threads: dict[int, str]


def leftovers(before: WorkerSnapshot, after: WorkerSnapshot) -> list[str]:
    """What a run changed or left running in its worker (empty: the worker is as it was)."""
    found: list[str] = []
    new_threads = sorted(
        name for ident, name in after.threads.items() if ident not in before.threads
    )
    if new_threads:
        found.append(f"{len(new_threads)} thread(s) still running ({', '.join(new_threads)})")
    if after.cwd != before.cwd:
        found.append(f"working directory changed to {after.cwd}")
    changed_env = sorted(
        key
        for key in before.environ.keys() | after.environ.keys()
        if before.environ.get(key) != after.environ.get(key)
    )
    if changed_env:
        found.append(f"environment changed ({', '.join(changed_env)})")
    if after.sys_path != before.sys_path:
        found.append("sys.path changed")
    changed_signals = sorted(
        name
        for name in before.signal_handlers.keys() | after.signal_handlers.keys()
        if before.signal_handlers.get(name) is not after.signal_handlers.get(name)
    )
    if changed_signals:
        found.append(f"signal handlers changed ({', '.join(changed_signals)})")
    return found


def fault_of(outcome: Outcome, worker_exited: bool) -> str | None:
    """The fault that makes a worker unfit for another run (None: the run ended normally).

    A routine's ordinary exception is not a fault: the interpreter is intact and the leak
    checks still apply. Killed (limit, timeout, cancel) or crashed workers are gone anyway.
    """
    if worker_exited:
        return "the worker process ended"
    if outcome.status == "cancelled":
        return "cancelled"
    if outcome.error == MEMORY_EXCEEDED:
        return MEMORY_EXCEEDED
    if outcome.error and outcome.error.startswith("timed out after"):
        return outcome.error
    if outcome.error and outcome.error.startswith(SYS_EXIT_PREFIX):
        return "the routine called sys.exit()"
    if outcome.phase == "start":
        return "the routine failed to load"
    return None


@dataclass(frozen=True)
class WorkerReport:
    """What is known about a worker after one of its runs."""

    fault: str | None
    leftovers: list[str]
    live_children: list[int]
    rss_growth: int
    runs_served: int


def recycle_reason(report: WorkerReport, max_runs: int, max_rss_growth: int) -> str | None:
    """Why a worker must be killed instead of serving another run (None: reuse it)."""
    if report.fault is not None:
        return f"fault: {report.fault}"
    if report.live_children:
        pids = ", ".join(str(pid) for pid in report.live_children)
        return f"{len(report.live_children)} child process(es) still alive ({pids})"
    if report.leftovers:
        return "; ".join(report.leftovers)
    if report.rss_growth > max_rss_growth:
        return (
            f"memory grew {report.rss_growth // 2**20}MiB over its baseline "
            f"(bound {max_rss_growth // 2**20}MiB)"
        )
    if report.runs_served >= max_runs:
        return f"served {report.runs_served} runs (max_runs_per_worker {max_runs})"
    return None


# --- DAG runs --------------------------------------------------------------------------------


def dag_table_update(
    table: dict[str, Any] | None, message: dict[str, Any]
) -> dict[str, Any] | None:
    """A DAG run's node table after one `dag` (the whole table) or `node` (one row) line."""
    if message.get("type") == "dag":
        return dict(message["record"])
    node = message.get("node")
    if table is None or not isinstance(node, dict):
        return table
    rows = [node if row.get("label") == node.get("label") else row for row in table["nodes"]]
    return {**table, "nodes": rows}


def interrupted_dag(table: dict[str, Any], error: str | None) -> dict[str, Any]:
    """The node table of a DAG run whose worker ended mid-run: running nodes failed with why."""
    reason = error or "the worker ended"
    rows = [
        {**row, "status": "failed", "error": reason} if row.get("status") == "running" else row
        for row in table["nodes"]
    ]
    failed = next((row["label"] for row in rows if row.get("status") == "failed"), None)
    return {**table, "nodes": rows, "status": "failed", "failed_node": failed, "outputs": {}}


BEHIND_HIGHER_PRIORITY = "waiting behind higher-priority runs"


@dataclass(frozen=True)
class IntakeStep:
    """What the intake does next.

    `start`: run a request of `priority` it holds already (fetched, waiting for this slot);
    `fetch`: pull up to `count` requests of `priority` without waiting; `wait`: every queue
    is empty, wait for a request or a freed slot; `full`: no slot is free, wait for one.
    """

    action: str
    priority: str = ""
    count: int = 0


def intake_step(
    free: int, cap: int, held: Mapping[str, int], emptied: Collection[str]
) -> IntakeStep:
    """The next step of the runner's intake: the highest priority first, what it holds before
    what it would fetch of the same priority, and never more than there are free slots.

    `held`: requests fetched and still waiting here, by priority; `emptied`: the priorities
    whose queue answered with fewer requests than asked since the intake last waited.
    """
    if free <= 0:
        return IntakeStep("full")
    for priority in PRIORITIES:  # highest first
        if held.get(priority, 0) > 0:
            return IntakeStep("start", priority)
        if priority not in emptied:
            return IntakeStep("fetch", priority, max(1, min(free, cap)))
    return IntakeStep("wait")


def behind_higher_priority(held_priority: str, started_priority: str) -> bool:
    """Does a request held here wait behind the run just started (of a higher priority)?"""
    return PRIORITIES.index(started_priority) < PRIORITIES.index(held_priority)
