"""Run numbers: one counter per routine in the dispatch bucket, moved by compare-and-set."""

from __future__ import annotations

from nats.js.kv import KeyValue

from mainspring.base import kv


def run_number_key(routine: str) -> str:
    """The dispatch-bucket key of a routine's last run number."""
    return f"number.{kv.key_token(routine)}"


async def next_run_number(bucket: KeyValue, routine: str) -> int:
    """Take the routine's next run number (1 for its first run)."""
    return int(await kv.compare_and_set(bucket, run_number_key(routine), _incremented))


class RunNumbers:
    """Run numbers for the dispatcher, the counters' one writer in a deployment.

    It remembers each counter's value and revision after writing it, so taking a number is
    one compare-and-set against that revision; another dispatcher replica taking a number in
    between only costs a read (the write loses and the counter is read again).
    """

    def __init__(self, bucket: KeyValue) -> None:
        self._kv = bucket
        self._last: dict[str, tuple[bytes | None, int]] = {}

    async def next(self, routine: str) -> int:
        """The next run number of a routine."""
        value, revision = await kv.compare_and_set_from(
            self._kv, run_number_key(routine), _incremented, self._last.get(routine)
        )
        self._last[routine] = (value, revision)
        return int(value)


def _incremented(current: bytes | None) -> bytes:
    return str(int(current or b"0") + 1).encode()
