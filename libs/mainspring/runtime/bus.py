"""Connecting to NATS; declaring the stream, buckets and object store once (`mainspring setup`).

Services and clients never declare them at connect: a service only checks that what it
needs is there as this version needs it, so replicas of two versions during a rolling upgrade
cannot flip stream settings back and forth. Declaring is one deliberate step.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import (
    DiscardPolicy,
    KeyValueConfig,
    ObjectStoreConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import NotFoundError
from pydantic import BaseModel

from mainspring.base import credentials, tracing
from mainspring.base.kv import declare_bucket
from mainspring.base.settings import Settings
from mainspring.contract import subjects
from mainspring.storage.ledger import LEDGER_TTL_S


class BusError(ConnectionError):
    """The NATS server cannot be reached or used."""


class BusNotSetUp(RuntimeError):
    """The stream or a bucket is missing or differs from what this version needs."""


SETUP_HINT = "run `mainspring setup` (as an admin user in a deployment)"

# Buckets of facts the services own, kept with a little history.
STATE_BUCKETS = (
    subjects.ROUTINES_BUCKET,
    subjects.DISPATCH_BUCKET,
    subjects.TICKER_BUCKET,
    subjects.WATCHER_BUCKET,
    subjects.STATE_BUCKET,
    subjects.BLUEPRINTS_BUCKET,
    subjects.TRIGGERS_BUCKET,
)
# The stream settings checked at start: the ones a rolling upgrade must never flip.
STREAM_FIELDS = (
    "subjects",
    "retention",
    "storage",
    "duplicate_window",
    "max_age",
    "num_replicas",
    "max_bytes",
    "discard",
)
# The stream's byte limit unless settings say otherwise.
STREAM_MAX_BYTES: int = Settings.model_fields["stream_max_bytes"].default


def stream_config(
    duplicate_window_s: float = 600.0, replicas: int = 1, max_bytes: int = STREAM_MAX_BYTES
) -> StreamConfig:
    """The one stream every subject of the system lives in (file storage, dedup window).

    Bounded by age and bytes; when full it drops its oldest messages (discard "old"), so new
    triggers are always accepted and a consumer that fell further behind than the stream
    holds skips what was dropped (see ARCHITECTURE.md, "Bounded storage").
    """
    return StreamConfig(
        name=subjects.STREAM,
        subjects=list(subjects.STREAM_SUBJECTS),
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        duplicate_window=duplicate_window_s,
        max_age=14 * 24 * 3600.0,
        num_replicas=replicas,
        max_bytes=max_bytes,
        discard=DiscardPolicy.OLD,
    )


PROGRESS_MAX_AGE_S: float = Settings.model_fields["progress_max_age_s"].default
PROGRESS_MAX_BYTES: int = Settings.model_fields["progress_max_bytes"].default
# Progress reports carry no Nats-Msg-Id; the window only has to fit inside the max age.
PROGRESS_DUPLICATE_WINDOW_S = 120.0


def progress_stream_config(
    max_age_s: float = PROGRESS_MAX_AGE_S, replicas: int = 1, max_bytes: int = PROGRESS_MAX_BYTES
) -> StreamConfig:
    """The stream of run progress: file storage, kept briefly, its oldest reports dropped.

    Progress is the one event a run sends thousands of; the recorder folds it into the run's
    row and progress history, after which the message has no use. max_age is the outage the
    recorder can catch up from without losing progress (see ARCHITECTURE.md, "Bounded
    storage").
    """
    return StreamConfig(
        name=subjects.PROGRESS_STREAM,
        subjects=list(subjects.PROGRESS_STREAM_SUBJECTS),
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        duplicate_window=min(PROGRESS_DUPLICATE_WINDOW_S, max_age_s),
        max_age=max_age_s,
        num_replicas=replicas,
        max_bytes=max_bytes,
        discard=DiscardPolicy.OLD,
    )


def bucket_configs(settings: Settings) -> list[KeyValueConfig]:
    """Every KV bucket of the system with the settings this version needs."""

    def bucket(
        name: str, history: int, ttl: float | None = None, max_bytes: int | None = None
    ) -> KeyValueConfig:
        return KeyValueConfig(
            bucket=name,
            history=history,
            ttl=ttl,
            max_bytes=max_bytes or settings.bucket_max_bytes,
            storage=StorageType.FILE,
            replicas=settings.stream_replicas,
        )

    return [
        *(bucket(name, history=5) for name in STATE_BUCKETS),
        # One entry per run and mark, kept 14 days: far more than any state bucket holds.
        bucket(
            subjects.LEDGER_BUCKET, history=1, ttl=LEDGER_TTL_S, max_bytes=settings.ledger_max_bytes
        ),
        bucket(subjects.LEASES_BUCKET, history=1, ttl=settings.lease_ttl_s),
        # A runner rewrites its entry every heartbeat: one killed without draining is gone
        # within the TTL.
        bucket(subjects.RUNNERS_BUCKET, history=1, ttl=settings.runner_capacity_ttl_s),
    ]


def bucket_discard(bucket: str) -> DiscardPolicy:
    """What a full bucket does. A state bucket refuses a write ("new") rather than drop a live
    fact (a cursor, a definition). The run ledger grows with every run instead: refusing would
    stop every run from settling its outcome once it is full, so it drops its oldest entries
    ("old"), the marks of runs whose messages are the least likely to come back."""
    return DiscardPolicy.OLD if bucket == subjects.LEDGER_BUCKET else DiscardPolicy.NEW


@dataclass(frozen=True)
class Requirement:
    """A JetStream stream this version needs: how to create it and the settings it must have."""

    what: str
    stream: str
    settings: dict[str, Any]
    declare: StreamConfig | KeyValueConfig | ObjectStoreConfig


def requirements(settings: Settings) -> list[Requirement]:
    """The streams, buckets and object store of the system.

    The main stream comes first: setup updating a stream of an older version takes
    run.progress out of it before the progress stream may claim the subject.
    """
    streams = (
        stream_config(
            settings.duplicate_window_s, settings.stream_replicas, settings.stream_max_bytes
        ),
        progress_stream_config(
            settings.progress_max_age_s, settings.stream_replicas, settings.progress_max_bytes
        ),
    )
    needed = [
        Requirement(
            f"stream {stream.name}",
            stream.name or "",
            {field: getattr(stream, field) for field in STREAM_FIELDS},
            stream,
        )
        for stream in streams
    ]
    for config in bucket_configs(settings):
        needed.append(
            Requirement(
                f"bucket {config.bucket}",
                f"KV_{config.bucket}",
                {
                    "max_msgs_per_subject": config.history,
                    "max_age": config.ttl or 0.0,
                    "storage": config.storage,
                    "num_replicas": config.replicas,
                    "max_bytes": config.max_bytes,
                    "discard": bucket_discard(config.bucket),
                },
                config,
            )
        )
    bundles = ObjectStoreConfig(
        bucket=subjects.BUNDLES_BUCKET,
        storage=StorageType.FILE,
        replicas=settings.stream_replicas,
        max_bytes=settings.bundles_max_bytes,
    )
    needed.append(
        Requirement(
            f"object store {subjects.BUNDLES_BUCKET}",
            f"OBJ_{subjects.BUNDLES_BUCKET}",
            {
                "storage": bundles.storage,
                "num_replicas": bundles.replicas,
                "max_bytes": bundles.max_bytes,
                "discard": DiscardPolicy.NEW,
            },
            bundles,
        )
    )
    return needed


def _comparable(value: Any) -> Any:
    # The server omits zero values and answers durations as floats: compare like with like.
    if value is None:
        return 0.0
    if isinstance(value, list):
        return sorted(value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return value


def differences(requirement: Requirement, actual: StreamConfig | None) -> list[str]:
    """How an existing stream differs from a requirement, one phrase each (empty: it fits)."""
    if actual is None:
        return [f"{requirement.what} is missing"]
    found = []
    for field, wanted in requirement.settings.items():
        have = _comparable(getattr(actual, field, None))
        if have != _comparable(wanted):
            found.append(
                f"{requirement.what} has {field} {have}, this version needs {_comparable(wanted)}"
            )
    return found


def refusal(found: list[str]) -> str | None:
    """The one line a service refuses to start with, or None when the bus fits."""
    if not found:
        return None
    more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
    return f"{found[0]}{more}: {SETUP_HINT}"


async def _stream_config(js: JetStreamContext, name: str) -> StreamConfig | None:
    try:
        return (await js.stream_info(name)).config
    except NotFoundError:
        return None


async def check_bus(js: JetStreamContext, settings: Settings) -> None:
    """Raise BusNotSetUp, in one line, unless the bus is set up as this version needs."""
    found: list[str] = []
    for requirement in requirements(settings):
        found += differences(requirement, await _stream_config(js, requirement.stream))
    line = refusal(found)
    if line is not None:
        raise BusNotSetUp(line)


async def _declare(js: JetStreamContext, declare: Any) -> None:
    if isinstance(declare, KeyValueConfig):
        await declare_bucket(js, declare)
    elif isinstance(declare, ObjectStoreConfig):
        await js.create_object_store(declare.bucket or "", config=declare)
    else:
        await js.add_stream(declare)


def corrected(current: StreamConfig, settings: dict[str, Any]) -> StreamConfig:
    """`current` with `settings`, and a duplicate window no longer than a new max age: the
    server refuses a longer one (a bucket declared with a TTL got its window cut to it)."""
    changed = replace(current, **settings)
    max_age = changed.max_age or 0.0
    if max_age and (changed.duplicate_window or 0.0) > max_age:
        changed = replace(changed, duplicate_window=max_age)
    return changed


async def setup_bus(js: JetStreamContext, settings: Settings) -> list[str]:
    """Create what is missing and correct what differs; returns what it changed (idempotent)."""
    changed: list[str] = []
    for requirement in requirements(settings):
        current = await _stream_config(js, requirement.stream)
        if current is None:
            await _declare(js, requirement.declare)
            changed.append(f"created {requirement.what}")
            # What a declaration cannot say (nats-py creates every bucket discarding "new")
            # is corrected right away.
            current = await _stream_config(js, requirement.stream)
            if current is not None and differences(requirement, current):
                await js.update_stream(corrected(current, requirement.settings))
            continue
        found = differences(requirement, current)
        if found:
            await js.update_stream(corrected(current, requirement.settings))
            changed += [f"updated {phrase}" for phrase in found]
    return changed


def tls_context(url: str, ca_file: str | None) -> ssl.SSLContext | None:
    """How to verify a TLS server: trusting `ca_file` (else the system's CAs); None without TLS.

    A `tls://` URL asks for TLS; a CA given for a `nats://` URL does too, since nats-py then
    upgrades the connection when the server requires TLS.
    """
    if ca_file is None and not url.startswith("tls://"):
        return None
    try:
        return ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise BusError(
            f"cannot load the NATS TLS certificate {ca_file}: {exc}; fix MAINSPRING_NATS_TLS_CA"
        ) from None


def connection_options(settings: Settings) -> dict[str, Any]:
    """The URL (with its credentials) and TLS context the settings say to connect with."""
    url = settings.resolved_nats_url()
    context = tls_context(url, settings.resolved_nats_tls_ca())
    return {"servers": url, **({"tls": context} if context is not None else {})}


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
    except Exception as exc:  # noqa: BLE001 - any connect failure is one line
        why = type(exc).__name__
        if "authorization" in str(exc).lower():
            why = "the server refused these credentials (MAINSPRING_NATS_CREDENTIALS or the URL)"
        raise BusError(
            f"cannot reach NATS at {credentials.redacted(url)}: {why}; is `mainspring up` "
            "running or MAINSPRING_NATS_URL right?"
        ) from None


async def connect_with(settings: Settings, name: str, **options: Any) -> Client:
    """Connect as the settings say: URL, credentials and TLS."""
    found = connection_options(settings)
    return await connect(found.pop("servers"), name, **found, **options)


def message_id_headers(event: BaseModel) -> dict[str, str]:
    """The deterministic Nats-Msg-Id of a message, when it has one (a broker adds traceparent)."""
    headers: dict[str, str] = {}
    message_id: Callable[[], str] | None = getattr(event, "message_id", None)
    if message_id is not None:
        # A redelivered handler or a second replica publishes the same id: stored once.
        headers["Nats-Msg-Id"] = message_id()
    return headers


def message_headers(event: BaseModel) -> dict[str, str]:
    """What every published message carries: its deterministic Nats-Msg-Id if any, traceparent."""
    return dict(tracing.inject(message_id_headers(event)))


async def publish(js: JetStreamContext, event: BaseModel, subject: str) -> None:
    """Publish a message on the stream from outside a service (SDK, client, ticker loop)."""
    body = event.model_dump_json().encode()
    headers = message_id_headers(event)
    with tracing.sending(subject, headers, len(body)):
        await js.publish(
            subject, body, stream=subjects.stream_of(subject), headers=message_headers(event)
        )


async def set_up(settings: Settings) -> list[str]:
    """`mainspring setup`: connect as settings say, declare the bus, disconnect."""
    nc = await connect_with(settings, name="mainspring-setup")
    try:
        return await setup_bus(nc.jetstream(), settings)
    finally:
        await nc.close()


def set_up_now(settings: Settings) -> list[str]:
    """`mainspring setup` from synchronous code, whether or not an event loop is running."""
    # Its own thread gets its own event loop, so callers inside a running loop can use it too.
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, set_up(settings)).result()


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
