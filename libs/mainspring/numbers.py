"""Run numbers: one counter per routine in the dispatch bucket, moved by compare-and-set."""

from __future__ import annotations

from nats.js.kv import KeyValue

from mainspring import kv


def run_number_key(routine: str) -> str:
    """The dispatch-bucket key of a routine's last run number."""
    return f"number.{kv.key_token(routine)}"


async def next_run_number(bucket: KeyValue, routine: str) -> int:
    """Take the routine's next run number (1 for its first run)."""
    written = await kv.compare_and_set(
        bucket, run_number_key(routine), lambda current: str(int(current or b"0") + 1).encode()
    )
    return int(written)
