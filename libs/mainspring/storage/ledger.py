"""The run ledger: per-run facts services share (attempts, cancel marks, outcomes) in JetStream KV.

Its own bucket, not the dispatch one, because it grows with every run: entries expire
after the stream's own max age (a run request older than that is gone from the work
queue, so nothing can ask about it any more).
"""

from __future__ import annotations

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


def outcome_key(run_id: str) -> str:
    """Key of a run's settled outcome (the first terminal RunCompleted of the run)."""
    return f"outcome.{run_id}"


async def ledger_bucket(js: JetStreamContext) -> KeyValue:
    """The ledger bucket (declared with its TTL by `mainspring setup`)."""
    return await js.key_value(subjects.LEDGER_BUCKET)


async def mark_cancelled(js: JetStreamContext, run_id: str, by: str) -> None:
    """Remember that a run must not start (whoever picks it up later ends it cancelled)."""
    await (await ledger_bucket(js)).put(cancel_key(run_id), by.encode())


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
    stored, _ = await read(kv, key)
    return RunCompleted.model_validate_json(stored) if stored else completed


class LedgerMarks:
    """The marks services write in the run ledger, on one connection: in-memory runs, cancels
    and first-writer-wins outcomes (the dispatcher's and the recorder's stale-run sweep's)."""

    def __init__(self, js: JetStreamContext) -> None:
        self._js = js

    async def mark_in_memory(self, run_id: str) -> None:
        await mark_in_memory(self._js, run_id)

    async def is_in_memory(self, run_id: str) -> bool:
        return await is_in_memory(self._js, run_id)

    async def mark_cancelled(self, run_id: str, by: str) -> None:
        await mark_cancelled(self._js, run_id, by)

    async def settle(self, completed: RunCompleted) -> RunCompleted:
        return await settle_outcome(await ledger_bucket(self._js), completed)
