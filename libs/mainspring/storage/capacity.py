"""What each runner offers: its slots, memory and isolation modes, in KV `runners`.

Every runner writes its entry `runner.<instance>` at start, rewrites it every heartbeat and
deletes it when it drains. The bucket's TTL (a few heartbeats) removes the entry of a runner
that died without draining. The server expires an entry without telling a watch, so a copy
kept by a watch (`CapacityCatalog`) also forgets an entry it has not seen rewritten within the
TTL, by its own clock: no clock of another machine enters.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Protocol

from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, NotFoundError
from nats.js.kv import KeyValue
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from mainspring.base.kv import key_token, read
from mainspring.contract import subjects
from mainspring.contract.messages import Isolation

RUNNER_PREFIX = "runner."
MIB = 2**20


class RunnerCapacity(BaseModel):
    """One live runner as it last described itself."""

    model_config = ConfigDict(frozen=True)

    instance: str = Field(min_length=1)
    host: str
    version: str
    started_at: AwareDatetime
    refreshed_at: AwareDatetime
    slots: int = Field(ge=1)
    busy: int = Field(ge=0)
    # Bytes, as the runner reads them from /proc/meminfo (MemTotal, MemAvailable).
    memory_total: int = Field(ge=0)
    memory_available: int = Field(ge=0)
    isolation: list[Isolation]


def runner_key(instance: str) -> str:
    """The KV key of a runner's entry."""
    return f"{RUNNER_PREFIX}{key_token(instance)}"


def largest(runners: list[RunnerCapacity]) -> RunnerCapacity | None:
    """The runner with the most memory in all (None: no runner)."""
    return max(runners, key=lambda r: r.memory_total, default=None)


def most_available(runners: list[RunnerCapacity]) -> RunnerCapacity | None:
    """The runner with the most memory available now (None: no runner)."""
    return max(runners, key=lambda r: r.memory_available, default=None)


def mebibytes(size: int) -> int:
    """Bytes as whole MiB, rounded down (as the run's memory reasons say them)."""
    return size // MIB


class CapacityBoard:
    """The runners bucket: each runner writes and deletes its own entry; anyone reads."""

    def __init__(self, kv: KeyValue, js: JetStreamContext) -> None:
        self._kv = kv
        self._js = js

    @classmethod
    async def open(cls, js: JetStreamContext) -> CapacityBoard:
        """The bucket as `mainspring setup` declared it (with its TTL)."""
        return cls(await js.key_value(subjects.RUNNERS_BUCKET), js)

    async def put(self, entry: RunnerCapacity) -> None:
        """Write (or refresh) a runner's entry."""
        await self._kv.put(runner_key(entry.instance), entry.model_dump_json().encode())

    async def remove(self, instance: str) -> None:
        """Delete a runner's entry (it drains: it takes no more runs)."""
        with contextlib.suppress(KeyNotFoundError, NotFoundError):
            await self._kv.delete(runner_key(instance))

    async def live(self) -> list[RunnerCapacity]:
        """Every entry the bucket holds now, by instance (expired ones are gone)."""
        # The keys from the bucket stream's per-subject state, then one get each: runners
        # are few, and a watch may say "initial values done" before it delivered them.
        prefix = f"$KV.{subjects.RUNNERS_BUCKET}."
        info = await self._js.stream_info(
            f"KV_{subjects.RUNNERS_BUCKET}", subjects_filter=f"{prefix}{RUNNER_PREFIX}>"
        )
        entries = []
        for subject in info.state.subjects or {}:
            value, _ = await read(self._kv, subject[len(prefix) :])
            if value is not None:
                entries.append(RunnerCapacity.model_validate_json(value))
        return sorted(entries, key=lambda entry: entry.instance)

    async def watch(self) -> AsyncIterator[tuple[str, RunnerCapacity | None] | None]:
        """Every current entry, then None (the current ones are in), then each change (an
        entry None when deleted)."""
        watcher = await self._kv.watch(f"{RUNNER_PREFIX}>")
        async for entry in watcher:
            if entry is None:
                yield None
            elif entry.operation in ("DEL", "PURGE") or not entry.value:
                yield entry.key, None
            else:
                yield entry.key, RunnerCapacity.model_validate_json(entry.value)


class CapacityFeed(Protocol):
    """What a catalog copy reads of the runners bucket."""

    def watch(self) -> AsyncIterator[tuple[str, RunnerCapacity | None] | None]: ...


class CapacityCatalog:
    """The live runners in memory, kept current by a KV watch: no round trip per question.

    Never started, it knows no runner (every question answers as with none live).
    """

    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self._clock = clock
        # key -> (entry, when this copy last saw it written, by its own clock)
        self._seen: dict[str, tuple[RunnerCapacity, float]] = {}
        self._task: asyncio.Task[None] | None = None

    def note(self, key: str, entry: RunnerCapacity | None) -> None:
        """Take in one change of the bucket (None: deleted)."""
        if entry is None:
            self._seen.pop(key, None)
        else:
            self._seen[key] = (entry, self._clock())

    def live(self) -> list[RunnerCapacity]:
        """The runners whose entry was written within the TTL, by instance."""
        now = self._clock()
        for key, (_, seen_at) in list(self._seen.items()):
            if now - seen_at > self.ttl_s:
                del self._seen[key]
        return sorted((entry for entry, _ in self._seen.values()), key=lambda e: e.instance)

    async def start(self, feed: CapacityFeed, wait_s: float = 5.0) -> None:
        """Follow the bucket in the background, returning once its current entries are in
        (or after `wait_s`, the rest then arriving in the background)."""
        loaded = asyncio.Event()

        async def follow() -> None:
            async for change in feed.watch():
                if change is None:
                    loaded.set()
                else:
                    self.note(*change)

        self._task = asyncio.create_task(follow())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(loaded.wait(), wait_s)

    async def stop(self) -> None:
        """Stop following the bucket."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
