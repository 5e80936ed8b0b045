"""Instance state of stateful routines: a small JSON dict per routine, kept between runs.

Semantics: a run sees the state as of its start (with that KV revision); when it ends its
state is written with compare-and-set against that revision. If another run of the same
routine wrote the state in between, the write is refused and the run fails with a state
conflict, loudly, instead of silently overwriting the other run's state. A run that does not
change its state writes nothing. Set `max_concurrent = 1` on routines whose runs must chain.
"""

from __future__ import annotations

import json
from typing import Any

from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from mainspring.base import kv
from mainspring.contract import subjects

MAX_STATE_BYTES = 64 * 1024


class StateConflict(RuntimeError):
    """Another run wrote the routine's state since this run read it."""


class StateTooLarge(ValueError):
    """A state dict larger than the KV value budget."""


def state_key(routine: str) -> str:
    """The KV key of a routine instance's state."""
    return f"state.{kv.key_token(routine)}"


async def state_bucket(js: JetStreamContext) -> KeyValue:
    """The state bucket (declared by `mainspring setup`)."""
    return await js.key_value(subjects.STATE_BUCKET)


async def load_state(bucket: KeyValue, routine: str) -> tuple[dict[str, Any], int]:
    """The routine's state and its revision (0: never written)."""
    value, revision = await kv.read(bucket, state_key(routine))
    loaded = json.loads(value or b"{}")
    return (loaded if isinstance(loaded, dict) else {}), revision


def encode_state(state: dict[str, Any]) -> bytes:
    """State as JSON bytes, refused when larger than the budget."""
    data = json.dumps(state, sort_keys=True, default=str).encode()
    if len(data) > MAX_STATE_BYTES:
        raise StateTooLarge(
            f"routine state is {len(data)} bytes, over {MAX_STATE_BYTES}: keep self.state small "
            "(ids, cursors, counters) and save data as artifacts"
        )
    return data


async def save_state(bucket: KeyValue, routine: str, state: dict[str, Any], revision: int) -> int:
    """Write state with compare-and-set against the revision the run started from."""
    written = await kv.write_if_unchanged(bucket, state_key(routine), encode_state(state), revision)
    if written is None:
        raise StateConflict(
            f"state conflict: another run of {routine} changed its state since this run "
            f"started (revision {revision}); this run's state was not written"
        )
    return written
