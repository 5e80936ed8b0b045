"""The circuit breaker: a routine fired too often pauses itself (a runaway loop, a cron typo).

Hop limits stop a chain that feeds itself; crash-loop protection stops code that cannot
start. Neither stops a routine that starts fine and is simply fired far more often than
anyone meant: a completion trigger on a busy upstream, an every="1s" typo, a dataset written
in tiny appends. Past `max_fires` triggered runs within `max_fires_window` the routine's
triggers are switched off with the reason, as crash-loop protection does, until
`mainspring routine enable`. Manual runs never count.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from mainspring.contract.messages import RequestRun, TriggerRecorded
from mainspring.storage.registry import RoutineDefinition
from mainspring_services.dispatcher.core import history_row


@dataclass
class FireWindows:
    """The triggered runs this dispatcher requested per routine, within each one's window.

    Counted in memory, so the breaker costs no round trip per run. With R dispatchers
    sharing the work, a routine may fire up to R x max_fires in a window before one of them
    trips; a runaway fires without bound, so it trips all the same.
    """

    recent: dict[str, deque[datetime]] = field(default_factory=dict)

    def record(self, definition: RoutineDefinition, at: datetime) -> int | None:
        """Count one triggered run; the count in the window when it passes the limit, else None."""
        limit = definition.options.max_fires
        if limit is None:
            return None
        window = timedelta(seconds=definition.options.max_fires_window_s)
        fired = self.recent.setdefault(definition.name, deque())
        fired.append(at)
        while fired and fired[0] <= at - window:
            fired.popleft()
        if len(fired) <= limit:
            return None
        # Tripped: the routine starts counting afresh once someone enables it again.
        del self.recent[definition.name]
        return len(fired)


def counts(request: RequestRun) -> bool:
    """Only runs a trigger started count; a person or an API caller asked for theirs."""
    return request.source == "trigger"


def trip(definition: RoutineDefinition, fired: int, now: datetime) -> tuple[str, TriggerRecorded]:
    """The reason the routine is paused, and the history row that says so."""
    window = definition.options.max_fires_window_s
    reason = (
        f"circuit breaker: {fired} triggered runs within {window:g}s, over max_fires="
        f"{definition.options.max_fires}; find what fires it so often (its trigger, or a chain "
        f"feeding it), then `mainspring routine enable {definition.name}`; raise max_fires or "
        "max_fires_window on the class if the rate is meant"
    )
    recorded = history_row(
        definition,
        definition.trigger.kind,
        f"circuit-breaker:{now.isoformat()}",
        "disabled",
        now,
        reason=reason,
    )
    return reason, recorded
