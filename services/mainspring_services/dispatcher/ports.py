"""What the dispatcher needs from storage and from the recorder, as Protocols.

In production each part is backed by a KV bucket or the recorder's API (`stores.open_parts`,
built in the service's start-up, once the bus is connected); the contract tests pass fakes,
so every subscriber can be driven without a bucket.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from mainspring.contract.messages import RequestRun, RunCompleted
from mainspring.contract.queries import RunQuery
from mainspring.storage.cursors import DatasetCursor
from mainspring.storage.named_triggers import NamedTrigger
from mainspring.storage.registry import DisabledBy, RegistryFeed, RoutineDefinition
from mainspring_services.dispatcher import admission, crash_loop, timed


class Registry(RegistryFeed, Protocol):
    """The routine registry: definitions, and the trigger switch crash-loop protection flips."""

    async def find(self, name: str) -> RoutineDefinition | None: ...

    async def set_enabled(
        self,
        name: str,
        enabled: bool,
        reason: str | None,
        now: datetime,
        by: DisabledBy = "user",
    ) -> RoutineDefinition: ...


class RunNumbering(Protocol):
    """Run numbers per routine: 1, 2, 3, ... with no gaps or repeats across replicas."""

    async def next(self, routine: str) -> int: ...


class CrashLoopStore(Protocol):
    """Consecutive start failures per routine, written with compare-and-set."""

    async def load(self, routine: str) -> tuple[crash_loop.CrashLoopState, int]: ...

    async def save(self, routine: str, state: crash_loop.CrashLoopState, revision: int) -> bool: ...


class OverlapStore(Protocol):
    """Active timed runs and the buffered tick per routine, written with compare-and-set."""

    async def read(self, routine: str) -> tuple[timed.OverlapState, int]: ...

    async def write(self, routine: str, state: timed.OverlapState, revision: int) -> bool: ...


class AdmissionStore(Protocol):
    """Per routine with max_concurrent: the runs holding a slot and the held queue's cursor,
    written with compare-and-set."""

    async def read(self, routine: str) -> tuple[admission.AdmissionState, int]: ...

    async def write(self, routine: str, state: admission.AdmissionState, revision: int) -> bool: ...


class HeldRequests(Protocol):
    """The requests held for a free slot, per routine, in arrival order (stream sequences)."""

    async def hold(self, request: RequestRun) -> int:
        """Store a request (once per run id within the dedup window); its sequence."""
        ...

    async def next_after(self, routine: str, sequence: int) -> tuple[RequestRun, int] | None:
        """The first held request of the routine after `sequence`, with its own."""
        ...

    async def at(self, sequence: int) -> RequestRun | None:
        """The held request stored at `sequence` (None when it is gone)."""
        ...


class CursorStore(Protocol):
    """Dataset cursors per routine; the dispatcher is their only writer."""

    async def load(self, routine: str) -> tuple[DatasetCursor | None, int]: ...

    async def save(self, routine: str, cursor: DatasetCursor, revision: int) -> bool: ...


class DispatchLedger(Protocol):
    """The run ledger's marks the dispatcher writes: in-memory runs, cancels, outcomes."""

    async def mark_in_memory(self, run_id: str) -> None: ...

    async def is_in_memory(self, run_id: str) -> bool: ...

    async def mark_cancelled(self, run_id: str, by: str) -> None: ...

    async def settle(self, completed: RunCompleted) -> RunCompleted: ...

    async def settled(self, run_id: str) -> RunCompleted | None: ...

    async def mark_held(self, run_id: str, routine: str, sequence: int) -> None: ...

    async def held(self, run_id: str) -> tuple[str, int] | None: ...


class RunHistory(Protocol):
    """The recorder's run history, asked for a manual run's upstream."""

    async def get_run(self, run_id: str) -> dict[str, Any] | None: ...

    async def list_runs(self, query: RunQuery | None = None) -> list[dict[str, Any]]: ...


class NamedTriggers(Protocol):
    """Named triggers: their definitions and activation, and the last run each started."""

    async def find(self, name: str) -> NamedTrigger | None: ...

    async def change(
        self, name: str, change: Callable[[NamedTrigger], NamedTrigger]
    ) -> NamedTrigger: ...

    async def record_run(self, name: str, run_id: str, at: datetime) -> None: ...

    async def targeting(self, target: str) -> list[NamedTrigger]: ...


class RequestLog(Protocol):
    """The run requests stored on the stream, asked only for a redelivered trigger (see fence)."""

    async def run_ids_after(self, subject: str, sequence: int, wanted: set[str]) -> set[str]: ...


@dataclass(frozen=True)
class DispatcherParts:
    """Everything the dispatcher reads and writes besides the bus."""

    registry: Registry
    numbers: RunNumbering
    crashes: CrashLoopStore
    overlap: OverlapStore
    admission: AdmissionStore
    held: HeldRequests
    cursors: CursorStore
    ledger: DispatchLedger
    history: RunHistory
    triggers: NamedTriggers
    requested: RequestLog
