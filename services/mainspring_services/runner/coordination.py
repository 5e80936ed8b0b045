"""What runner replicas share through JetStream KV: attempt counts, cancel marks, leases.

Per-routine `max_concurrent` needs a count shared by every runner replica. We use one KV
key per concurrency slot (`lease.<routine>.<i>`) taken with create(), which the server
applies only when the key is absent: a compare-and-set, so two replicas never hold the
same slot. The bucket has a TTL and the holder re-writes its key on every heartbeat, so a
lease of a runner killed with SIGKILL frees itself within the TTL instead of blocking the
routine for ever. A run that finds every slot taken is nak'ed with a delay (it stays in the
work queue, costs no runner slot while it waits) and a `run.queued` event says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from typing import Literal, Protocol

from nats.js import JetStreamContext
from nats.js.errors import (
    KeyNotFoundError,
    KeyWrongLastSequenceError,
    NotFoundError,
)
from nats.js.kv import KeyValue

from mainspring.base.kv import compare_and_set, read, write_if_unchanged
from mainspring.contract import subjects
from mainspring.contract.messages import RunCompleted
from mainspring.storage.ledger import (
    cancel_key,
    ledger_bucket,
    settle_outcome,
    settled_outcome,
    uncharged_key,
)

_MISSING = (KeyNotFoundError, NotFoundError)


def _is_cas_conflict(exc: Exception) -> bool:
    return isinstance(exc, KeyWrongLastSequenceError) or "wrong last sequence" in str(exc)


def _plus_one(current: bytes | None) -> bytes:
    return str(int(current or b"0") + 1).encode()


class RunLedger:
    """Uncharged deliveries and cancel marks per run id, in the run ledger bucket.

    A run's attempt is its delivery count less the deliveries that started none, so the
    common run (delivered once, started at once) writes nothing here.
    """

    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv

    @classmethod
    async def open(cls, js: JetStreamContext) -> RunLedger:
        """The ledger on its own bucket (created when missing)."""
        return cls(await ledger_bucket(js))

    async def uncharged_deliveries(self, run_id: str) -> int:
        """How many deliveries of a run started no attempt (read only on a redelivery)."""
        try:
            entry = await self._kv.get(uncharged_key(run_id))
        except _MISSING:
            return 0
        return int(entry.value or b"0")

    async def add_uncharged_delivery(self, run_id: str) -> None:
        """Count one delivery that starts no attempt (before its nak: a crash in between
        charges it, the safe side)."""
        await compare_and_set(self._kv, uncharged_key(run_id), _plus_one)

    async def cancel_requested(self, run_id: str) -> bool:
        """Was the run cancelled while it waited in the queue?"""
        try:
            await self._kv.get(cancel_key(run_id))
        except _MISSING:
            return False
        return True

    async def cancel_marks(self) -> set[str]:
        """Every run with a cancel mark now (the server filters the keys: one read at start)."""
        marked: set[str] = set()
        watcher = await self._kv.watch(cancel_key(">"), meta_only=True, ignore_deletes=True)
        try:
            async for entry in watcher:
                if entry is None:  # every stored mark is in
                    break
                marked.add(entry.key.removeprefix(cancel_key("")))
        finally:
            await watcher.stop()  # type: ignore[no-untyped-call]
        return marked

    async def settled(self, run_id: str) -> RunCompleted | None:
        """The run's outcome if one was settled already (by a runner or the stale sweep)."""
        return await settled_outcome(self._kv, run_id)

    async def settle(self, completed: RunCompleted) -> RunCompleted:
        """The run's outcome to publish: ours, or the one settled before us (see settle_outcome)."""
        return await settle_outcome(self._kv, completed)


class CancelLedger(Protocol):
    """Where cancel marks are stored (the run ledger)."""

    async def cancel_requested(self, run_id: str) -> bool: ...

    async def cancel_marks(self) -> set[str]: ...


class CancelMarks:
    """Which runs must not start, known without asking the ledger for every run.

    Cancels reach every runner on run.cancel as they are asked for (`note`), and the marks
    stored before this runner listened are read once (`load`), so a run's first delivery is
    answered from memory. The ledger is still read for a redelivery (the run waited: a mark
    may have come while this runner was away) and whenever the connection was re-established
    since the marks were loaded (run.cancel is not stored for core subscribers, so one sent
    during the gap was missed) until they are loaded again.
    """

    def __init__(self, ledger: CancelLedger, reconnects: Callable[[], int]) -> None:
        self._ledger = ledger
        self._reconnects = reconnects
        self._known: set[str] = set()
        # The reconnect count the marks were last loaded at (None: not loaded yet).
        self._loaded_at: int | None = None
        self._loading: asyncio.Task[None] | None = None

    def note(self, run_id: str) -> None:
        """A cancel this runner heard."""
        self._known.add(run_id)

    def known(self, run_id: str) -> bool:
        """Is the run known cancelled here (heard, loaded, or read before), asking no one?"""
        return run_id in self._known

    async def load(self) -> None:
        """Read every stored mark (after subscribing to run.cancel, so none falls between)."""
        at = self._reconnects()
        self._known |= await self._ledger.cancel_marks()
        self._loaded_at = at

    def _reload_later(self) -> None:
        if self._loading is None or self._loading.done():
            self._loading = asyncio.create_task(self.load())

    async def requested(self, run_id: str, redelivered: bool) -> bool:
        """Must this run not start?"""
        if run_id in self._known:
            return True
        current = self._loaded_at is not None and self._loaded_at == self._reconnects()
        if current and not redelivered:
            return False
        if not current and self._loaded_at is not None:
            self._reload_later()
        if await self._ledger.cancel_requested(run_id):
            self._known.add(run_id)
            return True
        return False


# claimed: a new claim; taken: a stale one taken over; held: another live attempt's; done:
# marked settled (earlier runners marked a claim done when its attempt settled).
Claim = Literal["claimed", "taken", "held", "done"]


class RunClaims:
    """At most one live attempt per run, across runner replicas.

    A run's request can be in two runners' hands at once: redelivered after the ack wait
    while its runner was blocked on the bus, or handed out again by a restarted server that
    lost its consumer state. The attempt's runner creates `run.<id>` in the leases bucket
    before the routine starts and re-writes it (with the time) every heartbeat; a second copy
    finds it fresh and waits instead of running the code a second time. A claim not refreshed
    for the ack wait belongs to a runner that died or froze, as a redelivery would say: the
    next copy takes it over with compare-and-set, so a run is taken over as soon as before.

    A claim whose attempt settled the run is left as it is, not marked or deleted: a copy
    reads the outcome beside its claim, and one whose outcome read raced the settle finds
    the claim held (fresh) and waits, or takes it over once stale and reads the outcome
    again. The bucket's TTL removes it. Marking it done cost a write per run.
    """

    def __init__(self, kv: KeyValue, holder: str, stale_after_s: float) -> None:
        self._kv = kv
        self._holder = holder
        self._stale_after_s = stale_after_s
        # The revision this runner last wrote for each claim it holds: refreshes are
        # compare-and-set on it, so a holder that froze cannot overwrite its successor.
        self._revisions: dict[str, int] = {}

    @classmethod
    async def open(cls, js: JetStreamContext, holder: str, stale_after_s: float) -> RunClaims:
        """Claims on the lease bucket (declared with its TTL by `mainspring setup`)."""
        return cls(await js.key_value(subjects.LEASES_BUCKET), holder, stale_after_s)

    def _value(self) -> bytes:
        return json.dumps({"holder": self._holder, "at": time.time()}).encode()

    async def claim(self, run_id: str) -> Claim:
        """Take the run's claim: "claimed" when new, "taken" when a stale one was taken over
        (its attempt may have settled the run since this copy read the outcome), "held"
        while another live attempt has it, "done" when an older runner marked it settled."""
        key = run_claim_key(run_id)
        created = await write_if_unchanged(self._kv, key, self._value(), 0)
        if created is not None:
            self._revisions[run_id] = created
            return "claimed"
        value, revision = await read(self._kv, key)
        if value and claim_is_done(value):
            return "done"
        if value and not claim_is_stale(value, time.time(), self._stale_after_s):
            return "held"
        taken = await write_if_unchanged(self._kv, key, self._value(), revision)
        if taken is None:
            return "held"
        self._revisions[run_id] = taken
        return "taken"

    def may_have_lost(self, run_id: str, claimed_for_s: float) -> bool:
        """Could another runner have taken the claim over by now? Only once it could have
        looked stale: it is refreshed every heartbeat, so a holder this long without a look
        was frozen (SIGSTOP, a stalled machine). Half the stale time leaves room for clocks."""
        return claimed_for_s > self._stale_after_s / 2

    async def still_held(self, run_id: str) -> bool:
        """Is the claim still the one this runner wrote (not taken over, not done)?"""
        value, revision = await read(self._kv, run_claim_key(run_id))
        return bool(value) and revision == self._revisions.get(run_id)

    async def refresh(self, run_id: str) -> bool:
        """Re-write a held claim so it stays fresh while the attempt is alive; False once
        another runner took it over (this one was frozen past the stale time)."""
        revision = self._revisions.get(run_id)
        if revision is None:
            return False
        written = await write_if_unchanged(self._kv, run_claim_key(run_id), self._value(), revision)
        if written is None:
            self._revisions.pop(run_id, None)
            return False
        self._revisions[run_id] = written
        return True

    def settled(self, run_id: str) -> None:
        """The claim's attempt settled the run: stop tracking it, and leave the key to the
        bucket's TTL (see the class)."""
        self._revisions.pop(run_id, None)

    async def release(self, run_id: str) -> None:
        """Let the next copy of the run's request start (or be refused as settled)."""
        revision = self._revisions.pop(run_id, None)
        if revision is None:
            return  # not this runner's (taken over while it was frozen): the holder's now
        try:
            await self._kv.delete(run_claim_key(run_id), last=revision)
        except _MISSING:
            pass
        except Exception as exc:
            if not _is_cas_conflict(exc):
                raise
            # Taken over since this runner's last write: the successor's claim stays.


def claim_is_done(value: bytes) -> bool:
    """Did the claim's attempt settle the run's outcome?"""
    try:
        return bool(json.loads(value).get("done"))
    except (ValueError, AttributeError):
        return False


def claim_is_stale(value: bytes, now: float, stale_after_s: float) -> bool:
    """Was a claim last refreshed longer ago than a live holder ever leaves it?"""
    try:
        at = float(json.loads(value)["at"])
    except (ValueError, KeyError, TypeError):
        return True  # unreadable: nobody can be holding it on purpose
    return now - at > stale_after_s


def run_claim_key(run_id: str) -> str:
    """The key of a run's live attempt in the leases bucket."""
    return f"run.{run_id}"


class ConcurrencyLeases:
    """Slots of per-routine max_concurrent, shared across runner replicas."""

    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv

    @classmethod
    async def open(cls, js: JetStreamContext) -> ConcurrencyLeases:
        """The lease bucket (declared with its TTL by `mainspring setup`)."""
        return cls(await js.key_value(subjects.LEASES_BUCKET))

    async def acquire(self, routine: str, limit: int, run_id: str) -> str | None:
        """Take a free slot for run_id (or the one it already holds); None when all are taken."""
        for slot in range(limit):
            key = f"lease.{routine.replace('/', '_')}.{slot}"
            try:
                await self._kv.create(key, run_id.encode())
                return key
            except Exception as exc:
                if not _is_cas_conflict(exc):
                    raise
            with contextlib.suppress(*_MISSING):
                if (await self._kv.get(key)).value == run_id.encode():
                    return key
        return None

    async def refresh(self, key: str, run_id: str) -> None:
        """Re-write a held lease so the TTL does not expire it while the run is alive."""
        await self._kv.put(key, run_id.encode())

    async def release(self, key: str) -> None:
        """Free a slot."""
        with contextlib.suppress(*_MISSING):
            await self._kv.delete(key)

    async def holders(self, routine: str, limit: int) -> list[str]:
        """Run ids holding the routine's slots now."""
        held: list[str] = []
        for slot in range(limit):
            with contextlib.suppress(*_MISSING):
                entry = await self._kv.get(f"lease.{routine.replace('/', '_')}.{slot}")
                if entry.value:
                    held.append(entry.value.decode())
        return held
