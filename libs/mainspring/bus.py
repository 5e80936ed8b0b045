"""Connecting to NATS and declaring the stream, buckets and object store idempotently."""

from __future__ import annotations

from typing import Any

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import (
    KeyValueConfig,
    ObjectStoreConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import BadRequestError, NotFoundError

from mainspring import subjects
from mainspring.kv import declare_bucket

STATE_BUCKETS = (
    subjects.ROUTINES_BUCKET,
    subjects.DISPATCH_BUCKET,
    subjects.TICKER_BUCKET,
    subjects.WATCHER_BUCKET,
)


class BusError(ConnectionError):
    """The NATS server cannot be reached or used."""


def stream_config(duplicate_window_s: float = 600.0, replicas: int = 1) -> StreamConfig:
    """The one stream every subject of the system lives in (file storage, dedup window)."""
    return StreamConfig(
        name=subjects.STREAM,
        subjects=list(subjects.STREAM_SUBJECTS),
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        duplicate_window=duplicate_window_s,
        max_age=14 * 24 * 3600.0,
        num_replicas=replicas,
    )


async def connect(url: str, name: str = "mainspring", **options: Any) -> Client:
    """Connect to NATS, turning a refused connection into one clear line."""
    try:
        return await nats.connect(
            url,
            name=name,
            connect_timeout=3,
            max_reconnect_attempts=options.pop("max_reconnect_attempts", 3),
            allow_reconnect=True,
            **options,
        )
    except Exception as exc:
        raise BusError(
            f"cannot reach NATS at {url}: {type(exc).__name__}; is `mainspring up` running "
            "or MAINSPRING_NATS_URL right?"
        ) from None


async def ensure_bus(
    js: JetStreamContext, duplicate_window_s: float = 600.0, replicas: int = 1
) -> None:
    """Declare the stream, state buckets and bundle store; safe to call from every service."""
    config = stream_config(duplicate_window_s, replicas)
    try:
        await js.add_stream(config)
    except BadRequestError:
        await js.update_stream(config)
    for bucket in STATE_BUCKETS:
        await declare_bucket(
            js,
            KeyValueConfig(bucket=bucket, history=5, storage=StorageType.FILE, replicas=replicas),
        )
    try:
        await js.object_store(subjects.BUNDLES_BUCKET)
    except (NotFoundError, BadRequestError):
        await js.create_object_store(
            subjects.BUNDLES_BUCKET, ObjectStoreConfig(storage=StorageType.FILE, replicas=replicas)
        )


async def read_bucket(js: JetStreamContext, bucket: str, prefix: str = "") -> dict[str, bytes]:
    """Every live key under prefix in a KV bucket with its value, read once.

    The expected keys come from the bucket stream's per-subject state, and the watch is read
    until each of them arrived: nats-py's watch can signal "initial values done" before the
    first value is delivered when the machine is busy, which would silently drop state.
    """
    subject_prefix = f"$KV.{bucket}."
    info = await js.stream_info(f"KV_{bucket}", subjects_filter=f"{subject_prefix}{prefix}>")
    expected = {s[len(subject_prefix) :] for s in (info.state.subjects or {})}
    if not expected:
        return {}
    kv = await js.key_value(bucket)
    watcher = await kv.watch(f"{prefix}>")
    values: dict[str, bytes] = {}
    seen: set[str] = set()
    try:
        while not expected <= seen:
            entry = await watcher.updates(timeout=30)  # type: ignore[no-untyped-call]
            if entry is None:
                continue
            seen.add(entry.key)
            if entry.operation in ("DEL", "PURGE") or not entry.value:
                values.pop(entry.key, None)
            else:
                values[entry.key] = entry.value
    finally:
        await watcher.stop()  # type: ignore[no-untyped-call]
    return values
