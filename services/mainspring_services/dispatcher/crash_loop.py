"""Crash-loop protection: triggered runs that fail to start, counted until the trigger is
switched off."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from mainspring.contract.messages import (
    RunCompleted,
    TriggerRecorded,
)
from mainspring.storage.registry import (
    RoutineDefinition,
)
from mainspring_services.dispatcher.core import history_row

StartOutcome = Literal["start_failed", "started", "ignored"]


_ERROR_IN_REASON = 300


@dataclass(frozen=True)
class CrashLoopState:
    """Consecutive start failures of a routine's triggered runs since it was last (re)armed.

    `epoch` is the definition's updated_at when counting began: `routine create` and
    `routine enable` change it, so a new version or a re-enable starts from zero.
    `failures` holds the keys (run ids, trigger event ids) already counted, so a
    redelivered event is not counted twice.
    """

    epoch: str = ""
    failures: tuple[str, ...] = ()

    def to_json(self) -> bytes:
        """As stored in the dispatch bucket."""
        return json.dumps({"epoch": self.epoch, "failures": list(self.failures)}).encode()

    @classmethod
    def from_json(cls, data: bytes | None) -> CrashLoopState:
        """From the dispatch bucket (empty or unreadable means never failed)."""
        try:
            loaded = json.loads(data or b"{}")
            return cls(str(loaded.get("epoch", "")), tuple(loaded.get("failures", ())))
        except (ValueError, AttributeError, TypeError):
            return cls()


@dataclass(frozen=True)
class CrashVerdict:
    """The counter to store, and whether to disable the trigger (with its history row)."""

    state: CrashLoopState
    disable_reason: str | None = None
    history: list[TriggerRecorded] = field(default_factory=list)


def start_outcome(completed: RunCompleted) -> StartOutcome:
    """What a finished run says about whether the routine can start.

    Only triggered runs count as failures: a person starting a broken routine by hand sees
    the error at once, and switching off the schedule because of it would surprise them.
    Any run that reached run() proves the code starts, so it resets the count.
    """
    if completed.phase == "run":
        return "started"
    if completed.status == "failed" and completed.source == "trigger":
        return "start_failed"
    return "ignored"


def trigger_outcome(recorded: TriggerRecorded) -> tuple[StartOutcome, str]:
    """A failed firing (a poll function raising) is a start failure, keyed like its run.

    A firing that names its run is keyed by the run id, so the run's own failed
    RunCompleted and the failed firing count once between them.
    """
    outcome: StartOutcome = "start_failed" if recorded.status == "failed" else "ignored"
    return outcome, recorded.run_id or recorded.message_id()


def decide_crash_loop(
    definition: RoutineDefinition | None,
    state: CrashLoopState,
    outcome: StartOutcome,
    failure_key: str,
    error: str | None,
    threshold: int,
    now: datetime,
    run_id: str | None = None,
) -> CrashVerdict:
    """Count a start failure (or reset on a start); disable the trigger at the threshold."""
    if definition is None or outcome == "ignored":
        return CrashVerdict(state)
    epoch = definition.updated_at.isoformat()
    current = state if state.epoch == epoch else CrashLoopState(epoch)
    if outcome == "started":
        return CrashVerdict(CrashLoopState(epoch) if state.failures else state)
    failures = current.failures
    if failure_key not in failures:
        failures = (*failures, failure_key)[-max(threshold, 1) :]
    counted = CrashLoopState(epoch, failures)
    if len(failures) < threshold or not definition.enabled:
        return CrashVerdict(counted)
    detail = (error or "no error given")[:_ERROR_IN_REASON]
    reason = (
        f"crash loop: {len(failures)} triggered runs in a row failed to start (last: {detail}); "
        f"fix the code and register it again with `mainspring routine create`, or "
        f"`mainspring routine enable {definition.name}`"
    )
    recorded = history_row(
        definition,
        definition.trigger.kind,
        f"crash-loop:{failure_key}",
        "disabled",
        now,
        run_id=run_id,
        reason=reason,
    )
    return CrashVerdict(counted, reason, [recorded])
