"""What the runner needs besides the bus and its workers, as Protocols.

In production they are KV buckets and the bundle store (`open_parts`), opened once the bus is
connected; the contract tests drive the subscribers with fakes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from mainspring.contract.messages import RunCompleted
from mainspring.storage.capacity import CapacityBoard, RunnerCapacity
from mainspring.storage.registry import RoutineStore
from mainspring.storage.state import state_bucket
from mainspring_services.runner.coordination import (
    Claim,
    ConcurrencyLeases,
    RunClaims,
    RunLedger,
)
from mainspring_services.runner.settings import RunnerSettings


class Admission(Protocol):
    """What the cancel subscriber hands its messages to (the Runner)."""

    @property
    def settings(self) -> RunnerSettings: ...

    async def cancel(self, run_id: str) -> None: ...


class BundleSource(Protocol):
    """Routine code by digest (the registry's bundle store)."""

    async def get_bundle(self, digest: str) -> bytes: ...


class Ledger(Protocol):
    """Per-run uncharged deliveries, cancel marks and first-writer-wins outcomes."""

    async def uncharged_deliveries(self, run_id: str) -> int: ...

    async def add_uncharged_delivery(self, run_id: str) -> None: ...

    async def cancel_requested(self, run_id: str) -> bool: ...

    async def cancel_marks(self) -> set[str]: ...

    async def settled(self, run_id: str) -> RunCompleted | None: ...

    async def settle(self, completed: RunCompleted) -> RunCompleted: ...


class Leases(Protocol):
    """Concurrency slots per routine (max_concurrent), shared by every runner."""

    async def acquire(self, routine: str, limit: int, run_id: str) -> str | None: ...

    async def refresh(self, key: str, run_id: str) -> None: ...

    async def release(self, key: str) -> None: ...

    async def holders(self, routine: str, limit: int) -> list[str]: ...


class Claims(Protocol):
    """Which runner holds a run: one execution even when its request is delivered twice."""

    async def claim(self, run_id: str) -> Claim: ...

    def may_have_lost(self, run_id: str, claimed_for_s: float) -> bool: ...

    async def still_held(self, run_id: str) -> bool: ...

    async def refresh(self, run_id: str) -> bool: ...

    def settled(self, run_id: str) -> None: ...

    async def release(self, run_id: str) -> None: ...


class Capacity(Protocol):
    """The runners bucket: this runner's own entry, and everyone's as they change."""

    async def put(self, entry: RunnerCapacity) -> None: ...

    async def remove(self, instance: str) -> None: ...

    def watch(self) -> AsyncIterator[tuple[str, RunnerCapacity | None] | None]: ...


@dataclass(frozen=True)
class RunnerParts:
    """Everything a runner reads and writes besides the bus and its workers."""

    bundles: BundleSource
    ledger: Ledger
    leases: Leases
    claims: Claims
    # Routine state (self.state) is read and saved with compare-and-set on the bucket itself.
    state: KeyValue
    capacity: Capacity


async def open_parts(js: JetStreamContext, holder: str, claim_stale_after_s: float) -> RunnerParts:
    """The production parts on the connected bus (declared by `mainspring setup`)."""
    return RunnerParts(
        bundles=await RoutineStore.open(js),
        ledger=await RunLedger.open(js),
        leases=await ConcurrencyLeases.open(js),
        claims=await RunClaims.open(js, holder, claim_stale_after_s),
        state=await state_bucket(js),
        capacity=await CapacityBoard.open(js),
    )
