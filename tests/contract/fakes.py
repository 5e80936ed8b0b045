"""In-memory parts for the contract tests: each fits a Protocol of a service's ports.

They keep what was written so a test can check it, and nothing else: decisions stay in the
services' cores, which the contract tests exercise through the real subscribers.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any, Generic, TypeVar

from mainspring.contract.messages import RequestRun, RunCompleted
from mainspring.contract.queries import RunQuery
from mainspring.storage.cursors import DatasetCursor
from mainspring.storage.named_triggers import NamedTrigger
from mainspring.storage.registry import DisabledBy, RoutineDefinition
from mainspring_services.dispatcher import admission, crash_loop, timed
from mainspring_services.dispatcher.ports import DispatcherParts

T = TypeVar("T")


class Registry:
    """Definitions by name; a switched-off trigger is kept as the registry keeps it."""

    def __init__(self, *definitions: RoutineDefinition) -> None:
        self.definitions = {d.name: d for d in definitions}
        self.switched: list[tuple[str, bool, str | None, DisabledBy]] = []

    async def find(self, name: str) -> RoutineDefinition | None:
        return self.definitions.get(name)

    async def set_enabled(
        self,
        name: str,
        enabled: bool,
        reason: str | None,
        now: datetime,
        by: DisabledBy = "user",
    ) -> RoutineDefinition:
        self.switched.append((name, enabled, reason, by))
        changed = self.definitions[name].model_copy(
            update={"enabled": enabled, "disabled_reason": reason, "disabled_by": by}
        )
        self.definitions[name] = changed
        return changed

    async def list(self) -> list[RoutineDefinition]:
        return list(self.definitions.values())

    async def watch(self) -> AsyncIterator[tuple[str, RoutineDefinition | None, int]]:
        # Every definition once, as a KV watch starts; then no changes.
        for definition in list(self.definitions.values()):
            yield definition.name, definition, 1
        await asyncio.Event().wait()

    async def last_revision(self) -> int:
        return 1 if self.definitions else 0


class Numbers:
    """1, 2, 3, ... per routine."""

    def __init__(self) -> None:
        self.issued: dict[str, int] = {}

    async def next(self, routine: str) -> int:
        self.issued[routine] = self.issued.get(routine, 0) + 1
        return self.issued[routine]


class Revisioned(Generic[T]):
    """A value per routine with a revision, for the compare-and-set parts."""

    def __init__(self, empty: Callable[[], T]) -> None:
        self.values: dict[str, tuple[T, int]] = {}
        self.empty = empty
        self.revisions = itertools.count(1)

    def get(self, routine: str) -> tuple[T, int]:
        return self.values.get(routine, (self.empty(), 0))

    def put(self, routine: str, value: T, revision: int) -> bool:
        if self.get(routine)[1] != revision:
            return False
        self.values[routine] = (value, next(self.revisions))
        return True


class CrashLoops:
    def __init__(self) -> None:
        self.store = Revisioned(crash_loop.CrashLoopState)

    async def load(self, routine: str) -> tuple[crash_loop.CrashLoopState, int]:
        return self.store.get(routine)

    async def save(self, routine: str, state: crash_loop.CrashLoopState, revision: int) -> bool:
        return self.store.put(routine, state, revision)


class Overlaps:
    def __init__(self) -> None:
        self.store = Revisioned(timed.OverlapState)

    async def read(self, routine: str) -> tuple[timed.OverlapState, int]:
        return self.store.get(routine)

    async def write(self, routine: str, state: timed.OverlapState, revision: int) -> bool:
        return self.store.put(routine, state, revision)


class Admissions:
    def __init__(self) -> None:
        self.store = Revisioned(admission.AdmissionState)

    async def read(self, routine: str) -> tuple[admission.AdmissionState, int]:
        return self.store.get(routine)

    async def write(self, routine: str, state: admission.AdmissionState, revision: int) -> bool:
        return self.store.put(routine, state, revision)


class HeldQueue:
    """Held requests in arrival order, one per run id (as the stream's dedup keeps them)."""

    def __init__(self) -> None:
        self.requests: dict[int, tuple[str, RequestRun]] = {}
        self.sequences = itertools.count(1)

    async def hold(self, request: RequestRun) -> int:
        for sequence, (_, held) in self.requests.items():
            if held.run_id == request.run_id:
                return sequence
        sequence = next(self.sequences)
        self.requests[sequence] = (request.routine, request)
        return sequence

    async def next_after(self, routine: str, sequence: int) -> tuple[RequestRun, int] | None:
        for seq in sorted(self.requests):
            if seq > sequence and self.requests[seq][0] == routine:
                return self.requests[seq][1], seq
        return None

    async def at(self, sequence: int) -> RequestRun | None:
        found = self.requests.get(sequence)
        return found[1] if found is not None else None


class Cursors:
    def __init__(self) -> None:
        self.store: Revisioned[DatasetCursor | None] = Revisioned(lambda: None)

    async def load(self, routine: str) -> tuple[DatasetCursor | None, int]:
        return self.store.get(routine)

    async def save(self, routine: str, cursor: DatasetCursor, revision: int) -> bool:
        return self.store.put(routine, cursor, revision)


class Ledger:
    """In-memory marks, cancel marks and first-writer-wins outcomes."""

    def __init__(self) -> None:
        self.in_memory: set[str] = set()
        self.cancelled: dict[str, str] = {}
        self.outcomes: dict[str, RunCompleted] = {}
        self.held_runs: dict[str, tuple[str, int]] = {}

    async def mark_in_memory(self, run_id: str) -> None:
        self.in_memory.add(run_id)

    async def is_in_memory(self, run_id: str) -> bool:
        return run_id in self.in_memory

    async def mark_cancelled(self, run_id: str, by: str) -> None:
        self.cancelled[run_id] = by

    async def settle(self, completed: RunCompleted) -> RunCompleted:
        return self.outcomes.setdefault(completed.run_id, completed)

    async def settled(self, run_id: str) -> RunCompleted | None:
        return self.outcomes.get(run_id)

    async def mark_held(self, run_id: str, routine: str, sequence: int) -> None:
        self.held_runs[run_id] = (routine, sequence)

    async def held(self, run_id: str) -> tuple[str, int] | None:
        return self.held_runs.get(run_id)


class History:
    """The recorder's answers: a fixed list of runs."""

    def __init__(self, *runs: dict[str, Any]) -> None:
        self.runs = list(runs)

    async def get_run(self, run_id: str) -> dict[str, Any] | None:
        return next((r for r in self.runs if r["id"] == run_id), None)

    async def list_runs(self, query: RunQuery | None = None) -> list[dict[str, Any]]:
        routine = query.routine if query is not None else None
        return [r for r in self.runs if routine is None or r["routine"] == routine]


class Triggers:
    """Named triggers by name, with the runs they started."""

    def __init__(self, *triggers: NamedTrigger) -> None:
        self.triggers = {t.name: t for t in triggers}
        self.runs: list[tuple[str, str]] = []

    async def find(self, name: str) -> NamedTrigger | None:
        return self.triggers.get(name)

    async def change(
        self, name: str, change: Callable[[NamedTrigger], NamedTrigger]
    ) -> NamedTrigger:
        self.triggers[name] = change(self.triggers[name])
        return self.triggers[name]

    async def record_run(self, name: str, run_id: str, at: datetime) -> None:
        self.runs.append((name, run_id))

    async def targeting(self, target: str) -> list[NamedTrigger]:
        return [t for t in self.triggers.values() if t.target == target]


class RequestLog:
    """No request is stored: a test broker never redelivers, so the fence never asks."""

    async def run_ids_after(self, subject: str, sequence: int, wanted: set[str]) -> set[str]:
        return set()


def dispatcher_parts(
    *definitions: RoutineDefinition,
    triggers: Triggers | None = None,
    history: History | None = None,
) -> DispatcherParts:
    """Fresh fakes for every part of the dispatcher, with these routines registered."""
    return DispatcherParts(
        registry=Registry(*definitions),
        numbers=Numbers(),
        crashes=CrashLoops(),
        overlap=Overlaps(),
        admission=Admissions(),
        held=HeldQueue(),
        cursors=Cursors(),
        ledger=Ledger(),
        history=history or History(),
        triggers=triggers or Triggers(),
        requested=RequestLog(),
    )
