"""Raw nats-py baselines, measured on the benchmark's own server in the same run.

Each one takes the shape of the path it is compared with: a stored JetStream message with
a `Nats-Msg-Id` (our publishes all carry one, so the server runs its dedup check for both),
of about the size of a run request, on a file-storage stream of the same server with the
same fsync setting.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid

from nats.js import JetStreamContext
from nats.js.api import StorageType, StreamConfig
from nats.js.errors import NotFoundError

from mainspring.runtime.bus import connect

RAW_STREAM = "BENCH_RAW"
RAW_SUBJECT = "benchraw.msg"
# About the size of a serialized RequestRun of a no-op run.
PAYLOAD = b"x" * 900
IN_FLIGHT = 1000


async def _fresh_stream(js: JetStreamContext) -> None:
    """The raw stream, emptied, so every measurement starts alike."""
    config = StreamConfig(
        name=RAW_STREAM,
        subjects=[RAW_SUBJECT],
        storage=StorageType.FILE,
        duplicate_window=600.0,
    )
    with contextlib.suppress(NotFoundError):
        await js.delete_stream(RAW_STREAM)
    await js.add_stream(config)


async def raw_publish_rate(url: str, seconds: float) -> float:
    """Messages per second that pipelined publishes (up to IN_FLIGHT unacked) get stored."""
    nc = await connect(url, name="bench-raw")
    js = nc.jetstream(publish_async_max_pending=IN_FLIGHT)
    try:
        await _fresh_stream(js)
        stored = 0
        started = time.perf_counter()
        deadline = started + seconds
        while time.perf_counter() < deadline:
            futures = [
                await js.publish_async(
                    RAW_SUBJECT, PAYLOAD, headers={"Nats-Msg-Id": uuid.uuid4().hex}
                )
                for _ in range(100)
            ]
            stored += len(futures)
        await js.publish_async_completed()
        elapsed = time.perf_counter() - started
        await js.delete_stream(RAW_STREAM)
        return stored / elapsed
    finally:
        await nc.close()


async def raw_delivery_latencies(url: str, count: int) -> list[float]:
    """Publish one stored message, wait for its ack, time until a pull consumer holds it (ms)."""
    nc = await connect(url, name="bench-raw")
    js = nc.jetstream()
    try:
        await _fresh_stream(js)
        subscription = await js.pull_subscribe(RAW_SUBJECT, durable="bench-raw", stream=RAW_STREAM)
        samples: list[float] = []
        for _ in range(count):
            started = time.perf_counter()
            await js.publish(RAW_SUBJECT, PAYLOAD, headers={"Nats-Msg-Id": uuid.uuid4().hex})
            messages = await subscription.fetch(1, timeout=10)
            samples.append((time.perf_counter() - started) * 1000)
            await messages[0].ack()
        await subscription.unsubscribe()
        await js.delete_stream(RAW_STREAM)
        return samples
    finally:
        await nc.close()


def measure_rate(url: str, seconds: float) -> float:
    """raw_publish_rate from synchronous code."""
    return asyncio.run(raw_publish_rate(url, seconds))
