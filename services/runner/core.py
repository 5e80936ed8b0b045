"""Pure decisions of the runner: what a finished child process means, retry delays."""

from __future__ import annotations

import json
import signal
from dataclasses import dataclass
from typing import Any

from mainspring.messages import RunPhase

MEMORY_EXCEEDED = "memory limit exceeded"


@dataclass(frozen=True)
class Outcome:
    """How a run ended, as recorded."""

    status: str
    outputs: dict[str, Any]
    error: str | None = None
    traceback: str | None = None
    phase: RunPhase = "run"


def outputs_as_json(value: Any) -> dict[str, Any]:
    """run()'s return value as small JSON outputs: a dict stays, anything else is wrapped."""
    if value is None:
        return {}
    outputs = value if isinstance(value, dict) else {"result": value}
    return dict(json.loads(json.dumps(outputs, default=str)))


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
        )
    reason = describe_exit(returncode)
    return Outcome("failed", {}, reason, log_tail or None)


def retry_delay(attempt: int, backoff_s: float) -> float:
    """Exponential backoff between attempts, capped at ten minutes."""
    return float(min(backoff_s * (2 ** max(0, attempt - 1)), 600.0))
