"""The dispatcher's parts in production: KV buckets and the recorder's API (see ports)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Generic, TypeVar

from faststream.nats import NatsBroker
from nats.js import JetStreamContext
from nats.js.api import RawStreamMsg
from nats.js.errors import NotFoundError
from nats.js.kv import KeyValue
from pydantic import BaseModel

from mainspring.base import kv
from mainspring.base.settings import Settings
from mainspring.client import Client
from mainspring.contract import subjects
from mainspring.contract.messages import RequestRun
from mainspring.runtime.service import publish_event
from mainspring.storage.cursors import DatasetCursor, load_cursor, save_cursor
from mainspring.storage.ledger import LedgerMarks
from mainspring.storage.named_triggers import TriggerStore
from mainspring.storage.numbers import RunNumbers
from mainspring.storage.registry import RoutineStore
from mainspring_services.dispatcher import admission, crash_loop, fence, timed
from mainspring_services.dispatcher.ports import DispatcherParts

State = TypeVar("State", bound=BaseModel)


class CrashLoopCounts:
    """Per-routine consecutive start failures in the dispatch bucket, written with compare-and-set.

    Once `follow` has loaded them, every count is kept in memory from a watch of the bucket
    (this dispatcher's own writes at once, another replica's as the watch brings them), so a
    healthy routine's completion, which changes nothing, reads nothing from the bus. A write
    still goes against the stored revision: a count that moved meanwhile loses the race and
    is read from the bucket again.
    """

    PREFIX = "crashloop."

    def __init__(self, bucket: KeyValue) -> None:
        self._kv = bucket
        self._known: dict[str, tuple[crash_loop.CrashLoopState, int]] | None = None
        self._task: asyncio.Task[None] | None = None

    def _key(self, routine: str) -> str:
        return f"{self.PREFIX}{kv.key_token(routine)}"

    async def follow(self) -> None:
        """Load every stored count, then keep them current in the background."""
        watcher = await self._kv.watch(f"{self.PREFIX}>")
        known: dict[str, tuple[crash_loop.CrashLoopState, int]] = {}
        loaded = asyncio.Event()

        async def run() -> None:
            async for entry in watcher:
                if entry is None:  # the stored counts are all in
                    self._known = known
                    loaded.set()
                    continue
                self._remember(known, entry.key, entry.value, int(entry.revision or 0))

        self._task = asyncio.create_task(run())
        await asyncio.wait_for(loaded.wait(), timeout=30)

    async def stop(self) -> None:
        """Stop following (counts are read from the bucket again)."""
        self._known = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    @staticmethod
    def _remember(
        known: dict[str, tuple[crash_loop.CrashLoopState, int]],
        key: str,
        value: bytes | None,
        revision: int,
    ) -> None:
        if revision and revision < known.get(key, (None, 0))[1]:
            return  # an older change the watch brought after this process's own write
        known[key] = (crash_loop.CrashLoopState.from_json(value or None), revision if value else 0)

    async def load(self, routine: str) -> tuple[crash_loop.CrashLoopState, int]:
        """The state and its revision (0 when never written): from memory once followed."""
        key = self._key(routine)
        if self._known is not None and key in self._known:
            return self._known[key]
        if self._known is not None:
            return crash_loop.CrashLoopState.from_json(None), 0
        value, revision = await kv.read(self._kv, key)
        return crash_loop.CrashLoopState.from_json(value), revision

    async def save(self, routine: str, state: crash_loop.CrashLoopState, revision: int) -> bool:
        """Store the state unless another replica changed it first (then False: decide again)."""
        key = self._key(routine)
        written = await kv.write_if_unchanged(self._kv, key, state.to_json(), revision)
        if self._known is not None:
            if written is not None:
                self._remember(self._known, key, state.to_json(), written)
            else:
                # Lost to a write the watch has not brought yet: the next load reads it.
                value, stored = await kv.read(self._kv, key)
                self._remember(self._known, key, value, stored)
        return written is not None


class RoutineStates(Generic[State]):
    """One pydantic state per routine under `<prefix>.<routine>` in the dispatch bucket,
    written with compare-and-set (a lost race reads again and decides again)."""

    def __init__(self, bucket: KeyValue, prefix: str, model: type[State]) -> None:
        self._kv = bucket
        self._prefix = prefix
        self._model = model

    def _key(self, routine: str) -> str:
        return f"{self._prefix}.{kv.key_token(routine)}"

    async def read(self, routine: str) -> tuple[State, int]:
        """The state and its revision (the empty state and 0 when none is stored)."""
        value, revision = await kv.read(self._kv, self._key(routine))
        if value is None:
            return self._model(), revision
        return self._model.model_validate_json(value), revision

    async def write(self, routine: str, state: State, revision: int) -> bool:
        """Save if nobody changed it since `revision`; False means read again."""
        value = state.model_dump_json().encode()
        return (
            await kv.write_if_unchanged(self._kv, self._key(routine), value, revision) is not None
        )


class OverlapGate(RoutineStates[timed.OverlapState]):
    """Active trigger runs and the buffered tick of each routine, in the dispatch bucket.

    The dispatcher records a run as active at the moment it decides to start it, in the
    same compare-and-set that checks the policy, and frees it on run.completed (which it
    consumes anyway). Asking the recorder (api.runs.list) would race with the recorder's
    consumer lag: a run requested a moment ago may not be recorded yet, so two quick ticks
    could both start. Following run.requested would race with our own publish the same
    way. The KV bucket survives dispatcher restarts; the revision check keeps concurrent
    handlers (ticks, completions, replicas) from overwriting each other.
    """

    def __init__(self, bucket: KeyValue) -> None:
        super().__init__(bucket, "overlap", timed.OverlapState)


class AdmissionSlots(RoutineStates[admission.AdmissionState]):
    """Per routine with max_concurrent, its admission state in the dispatch bucket."""

    def __init__(self, bucket: KeyValue) -> None:
        super().__init__(bucket, "admission", admission.AdmissionState)


async def next_on_subject(js: JetStreamContext, subject: str, after: int) -> RawStreamMsg | None:
    """The first message stored on `subject` after sequence `after` (None: there is none)."""
    try:
        return await js.get_msg(subjects.STREAM, seq=after + 1, subject=subject, next=True)
    except NotFoundError:
        return None


class StreamHeldRequests:
    """Held requests on `run.held.<routine>` in the stream: stored like every event, read by
    sequence, so a backlog costs disk, not a consumer redelivering it."""

    def __init__(self, broker: NatsBroker, js: JetStreamContext) -> None:
        self._broker = broker
        self._js = js

    async def hold(self, request: RequestRun) -> int:
        """Store the request; a copy within the dedup window answers the first one's sequence."""
        ack = await publish_event(
            self._broker,
            request,
            subjects.run_held_subject(request.routine),
            message_id=f"held:{request.run_id}",
        )
        return int(ack.seq)

    async def next_after(self, routine: str, sequence: int) -> tuple[RequestRun, int] | None:
        """The first held request of the routine after `sequence`."""
        found = await next_on_subject(self._js, subjects.run_held_subject(routine), sequence)
        if found is None:
            return None
        return RequestRun.model_validate_json(found.data or b""), int(found.seq or 0)

    async def at(self, sequence: int) -> RequestRun | None:
        """The held request stored at `sequence`."""
        try:
            found = await self._js.get_msg(subjects.STREAM, seq=sequence)
        except NotFoundError:
            return None
        return RequestRun.model_validate_json(found.data or b"")


class KvCursors:
    """Dataset cursors in the dispatch bucket."""

    def __init__(self, bucket: KeyValue) -> None:
        self._kv = bucket

    async def load(self, routine: str) -> tuple[DatasetCursor | None, int]:
        return await load_cursor(self._kv, routine)

    async def save(self, routine: str, cursor: DatasetCursor, revision: int) -> bool:
        return await save_cursor(self._kv, routine, cursor, revision)


class StreamRequestLog:
    """The requests on the stream after a message, read one by one by subject.

    Asked only for a redelivered trigger older than half the duplicate window, so a request
    is usually found within a few reads; when it is not there the reads go on to the last
    request stored (one round trip each).
    """

    def __init__(self, js: JetStreamContext) -> None:
        self._js = js

    async def run_ids_after(self, subject: str, sequence: int, wanted: set[str]) -> set[str]:
        """Which of `wanted` run ids have a request on `subject` stored after `sequence`."""
        found: set[str] = set()
        after = sequence
        while wanted - found:
            stored = await next_on_subject(self._js, subject, after)
            if stored is None:
                break
            run_id = fence.requested_run_id(stored.headers, stored.data)
            if run_id in wanted:
                found.add(run_id)
            if stored.seq is None:
                break
            after = stored.seq
        return found


async def open_parts(broker: NatsBroker, settings: Settings) -> DispatcherParts:
    """The production parts, on the connected broker's buckets (declared by `mainspring setup`)."""
    js = broker.connection.jetstream()
    dispatch = await js.key_value(subjects.DISPATCH_BUCKET)
    crashes = CrashLoopCounts(dispatch)
    await crashes.follow()
    return DispatcherParts(
        registry=await RoutineStore.open(js),
        numbers=RunNumbers(dispatch),
        crashes=crashes,
        overlap=OverlapGate(dispatch),
        admission=AdmissionSlots(dispatch),
        held=StreamHeldRequests(broker, js),
        cursors=KvCursors(dispatch),
        ledger=LedgerMarks(js),
        # Asked the way the SDK asks: through the client's request/reply calls.
        history=Client(broker.connection, settings),
        triggers=await TriggerStore.open(js),
        requested=StreamRequestLog(js),
    )
