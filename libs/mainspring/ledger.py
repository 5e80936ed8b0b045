"""The run ledger: per-run facts runners share (started attempts, cancel marks) in JetStream KV.

Its own bucket, not the dispatch one, because it grows with every run: entries expire
after the stream's own max age (a run request older than that is gone from the work
queue, so nothing can ask about it any more).
"""

from __future__ import annotations

from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from mainspring import subjects

LEDGER_TTL_S = 14 * 24 * 3600.0


def cancel_key(run_id: str) -> str:
    """Key of a run's cancel mark (checked by runners before they start it)."""
    return f"cancel.{run_id}"


def attempts_key(run_id: str) -> str:
    """Key of the number of started attempts of a run."""
    return f"attempt.{run_id}"


async def ledger_bucket(js: JetStreamContext) -> KeyValue:
    """The ledger bucket (declared with its TTL by `mainspring setup`)."""
    return await js.key_value(subjects.LEDGER_BUCKET)


async def mark_cancelled(js: JetStreamContext, run_id: str, by: str) -> None:
    """Remember that a run must not start (whoever picks it up later ends it cancelled)."""
    await (await ledger_bucket(js)).put(cancel_key(run_id), by.encode())
