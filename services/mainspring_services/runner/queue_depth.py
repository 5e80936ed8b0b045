"""The run queue as metrics: how many requests wait for a runner, and for how long."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime

from nats.js import JetStreamContext

from mainspring.contract import subjects
from mainspring.runtime import metrics

log = logging.getLogger("mainspring.runner")

QUEUE_POLL_S = 5.0


async def measure_queue(js: JetStreamContext) -> None:
    """Set the queue gauges from the runners' consumers, every priority together (one or two
    JetStream API calls per priority)."""
    pending = 0
    waiting = 0
    oldest: datetime | None = None
    for _, subject, name in subjects.RUN_QUEUES:
        info = await js.consumer_info(subjects.STREAM, name)
        queued = int(info.num_pending or 0) + int(info.num_ack_pending or 0)
        pending += int(info.num_pending or 0)
        waiting += queued
        floor = info.ack_floor.stream_seq if info.ack_floor else None
        if queued and floor is not None:
            # The first request past the ack floor is the oldest one no runner has finished with.
            found = await js.get_msg(subjects.STREAM, seq=floor + 1, subject=subject, next=True)
            if found.time is not None and (oldest is None or found.time < oldest):
                oldest = found.time
    metrics.RUN_QUEUE_PENDING.set(pending)
    metrics.RUN_QUEUE_OLDEST_AGE.set(metrics.queue_age(datetime.now(UTC), oldest, waiting))


async def watch_queue(js: JetStreamContext) -> None:
    """Measure the queue every few seconds until cancelled; a failed look is tried again."""
    while True:
        with contextlib.suppress(Exception):
            await measure_queue(js)
        await asyncio.sleep(QUEUE_POLL_S)
