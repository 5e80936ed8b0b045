"""The run ledger: per-run facts services share (attempts, cancel marks, outcomes) in JetStream KV.

Its own bucket, not the dispatch one, because it grows with every run: entries expire
after the stream's own max age (a run request older than that is gone from the work
queue, so nothing can ask about it any more).
"""

from __future__ import annotations

import json

from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from mainspring.base.kv import read, write_if_unchanged
from mainspring.contract import subjects
from mainspring.contract.messages import RunCompleted

LEDGER_TTL_S = 14 * 24 * 3600.0


def cancel_key(run_id: str) -> str:
    """Key of a run's cancel mark (checked by runners before they start it)."""
    return f"cancel.{run_id}"


def uncharged_key(run_id: str) -> str:
    """Key of the number of a run's deliveries that started no attempt (held, handed back)."""
    return f"uncharged.{run_id}"


def in_memory_key(run_id: str) -> str:
    """Key marking a run the dispatcher requested for in-memory execution."""
    return f"in_memory.{run_id}"


async def mark_in_memory(js: JetStreamContext, run_id: str) -> None:
    """Remember that a run executes in its caller's process (whose report is then accepted)."""
    await (await ledger_bucket(js)).put(in_memory_key(run_id), b"1")


async def is_in_memory(js: JetStreamContext, run_id: str) -> bool:
    """Was this run requested for in-memory execution?"""
    value, _ = await read(await ledger_bucket(js), in_memory_key(run_id))
    return value is not None


def held_key(run_id: str) -> str:
    """Key of where a run waits for a free slot (routine and held sequence), while it does."""
    return f"held.{run_id}"


def outcome_key(run_id: str) -> str:
    """Key of a run's settled outcome (the first terminal RunCompleted of the run)."""
    return f"outcome.{run_id}"


async def ledger_bucket(js: JetStreamContext) -> KeyValue:
    """The ledger bucket (declared with its TTL by `mainspring setup`)."""
    return await js.key_value(subjects.LEDGER_BUCKET)


async def mark_cancelled(js: JetStreamContext, run_id: str, by: str) -> None:
    """Remember that a run must not start (whoever picks it up later ends it cancelled)."""
    await (await ledger_bucket(js)).put(cancel_key(run_id), by.encode())


async def settled_outcome(kv: KeyValue, run_id: str) -> RunCompleted | None:
    """The run's outcome if one was settled already (None: it has not ended)."""
    value, _ = await read(kv, outcome_key(run_id))
    return RunCompleted.model_validate_json(value) if value else None


async def settle_outcome(kv: KeyValue, completed: RunCompleted) -> RunCompleted:
    """The run's outcome: `completed` if it is the first one claimed, else the one that was.

    A run's outcome has one writer: whoever creates its outcome key first (a runner, or the
    recorder's stale-run sweep). The loser publishes the winner again, not its own: under
    the same Nats-Msg-Id the stream drops the copy, and a claim whose publish was lost in a
    crash still reaches the bus on the run's redelivery.
    """
    key = outcome_key(completed.run_id)
    if await write_if_unchanged(kv, key, completed.model_dump_json().encode(), 0) is not None:
        return completed
    return await settled_outcome(kv, completed.run_id) or completed


class LedgerMarks:
    """The marks services write in the run ledger, on one connection: in-memory runs, cancels
    and first-writer-wins outcomes (the dispatcher's and the recorder's stale-run sweep's)."""

    def __init__(self, js: JetStreamContext) -> None:
        self._js = js
        self._bucket: KeyValue | None = None

    async def _ledger(self) -> KeyValue:
        # Looked up once: each lookup is a stream-info round trip.
        if self._bucket is None:
            self._bucket = await ledger_bucket(self._js)
        return self._bucket

    async def mark_in_memory(self, run_id: str) -> None:
        await mark_in_memory(self._js, run_id)

    async def is_in_memory(self, run_id: str) -> bool:
        return await is_in_memory(self._js, run_id)

    async def mark_cancelled(self, run_id: str, by: str) -> None:
        await mark_cancelled(self._js, run_id, by)

    async def settle(self, completed: RunCompleted) -> RunCompleted:
        return await settle_outcome(await self._ledger(), completed)

    async def settled(self, run_id: str) -> RunCompleted | None:
        """The run's outcome if one was settled already."""
        return await settled_outcome(await self._ledger(), run_id)

    async def mark_held(self, run_id: str, routine: str, sequence: int) -> None:
        """Remember where a held run waits, so cancelling it can end it at once."""
        value = json.dumps({"routine": routine, "sequence": sequence}).encode()
        await (await self._ledger()).put(held_key(run_id), value)

    async def held(self, run_id: str) -> tuple[str, int] | None:
        """The routine and held sequence of a run that was held (None: never held)."""
        value, _ = await read(await self._ledger(), held_key(run_id))
        if value is None:
            return None
        found = json.loads(value)
        return str(found["routine"]), int(found["sequence"])
