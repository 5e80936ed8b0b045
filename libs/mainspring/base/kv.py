"""JetStream key-value mechanics written once: keys from names, compare-and-set, buckets.

Every fact kept in a bucket (run numbers, cursors, crash-loop and overlap state, instance
state, registry entries, leases) is changed by reading a revision and writing against it;
these helpers are the only place that knows how nats-py reports a lost race.
"""

from __future__ import annotations

from collections.abc import Callable

from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig
from nats.js.errors import (
    BadRequestError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
    NotFoundError,
)
from nats.js.kv import KeyValue

# Characters kept as they are in a key token; everything else (the escape "_" included) is
# written as "_" and two hex digits per UTF-8 byte, so distinct names never share a key.
_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-")


def key_token(name: str) -> str:
    """A name as one KV-key (and subject) token, collision-free: `a/b` and `a_b` differ."""
    if name and all(char in _PLAIN for char in name):
        return name
    return "".join(
        char if char in _PLAIN else "".join(f"_{byte:02x}" for byte in char.encode())
        for char in name
    )


def is_revision_conflict(exc: BaseException) -> bool:
    """Did a write lose a compare-and-set race?

    nats-py raises KeyWrongLastSequenceError for an update against a stale revision, but a
    create that finds the key already there comes back as a generic API error.
    """
    if isinstance(exc, KeyWrongLastSequenceError):
        return True
    text = str(exc)
    return "wrong last sequence" in text or "key exists" in text


async def read(kv: KeyValue, key: str) -> tuple[bytes | None, int]:
    """A key's value and revision; (None, 0) when it was never written or is deleted."""
    try:
        entry = await kv.get(key)
    except (KeyNotFoundError, NotFoundError):
        return None, 0
    return entry.value or None, int(entry.revision or 0)


async def write_if_unchanged(kv: KeyValue, key: str, value: bytes, revision: int) -> int | None:
    """Write unless someone changed the key since `revision` (0: it must not exist yet).

    Returns the new revision, or None when the race was lost and the caller must read again.
    """
    try:
        if revision:
            return int(await kv.update(key, value, last=revision))
        return int(await kv.create(key, value))
    except Exception as exc:
        if is_revision_conflict(exc):
            return None
        raise


class TooManyConflicts(RuntimeError):
    """A key kept changing under a compare-and-set loop."""


async def compare_and_set(
    kv: KeyValue, key: str, change: Callable[[bytes | None], bytes], attempts: int = 100
) -> bytes:
    """Read, apply `change` to the current value, write against its revision; retry on a race.

    Returns the value written.
    """
    value, _ = await compare_and_set_from(kv, key, change, None, attempts)
    return value


async def compare_and_set_from(
    kv: KeyValue,
    key: str,
    change: Callable[[bytes | None], bytes],
    known: tuple[bytes | None, int] | None,
    attempts: int = 100,
) -> tuple[bytes, int]:
    """compare_and_set starting from a value and revision the caller remembers.

    The single writer of a key that kept what it last wrote spends one round trip (the write)
    instead of two; when someone else wrote since, the write loses and the key is read.
    Returns the value written and its revision, for the caller to remember.
    """
    for _ in range(attempts):
        current, revision = known if known is not None else await read(kv, key)
        known = None
        new_value = change(current)
        written = await write_if_unchanged(kv, key, new_value, revision)
        if written is not None:
            return new_value, written
    raise TooManyConflicts(f"{key} changed {attempts} times while being updated; try again")


async def declare_bucket(js: JetStreamContext, config: KeyValueConfig) -> KeyValue:
    """Bind to a bucket, creating it with `config` when it does not exist yet."""
    assert config.bucket is not None
    try:
        return await js.key_value(config.bucket)
    except (NotFoundError, BadRequestError):
        return await js.create_key_value(config)
