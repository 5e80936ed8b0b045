"""Ticker at scale: 100,000 schedules, tick-to-publish lag and idle CPU.

A real nats-server is started; the Ticker class is driven in-process (100k registry
entries through KV would only measure the CLI), but it publishes on the real stream and
saves its cursors in the real TICKER bucket. Lag is the time from a tick's nominal instant
to the stream's publish ack. The baseline is the same message published by the simplest
possible raw nats-py loop: sleep until the same instant, publish the same burst, await acks.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.measure import Summary, ratio
from mainspring.apps.up import free_port, start_nats_server
from mainspring.contract import subjects
from mainspring.contract.messages import ScheduleFired
from mainspring.runtime.bus import connect, setup_bus
from mainspring.sdk.triggers import ScheduleTrigger
from mainspring.storage.registry import RoutineDefinition
from mainspring_services.ticker.settings import TickerSettings
from mainspring_services.ticker.timers import Ticker

SCHEDULES = 100_000
LAG_WINDOW_S = 20.0
IDLE_WINDOW_S = 10.0


def definition(name: str, cron: str, defined_at: datetime) -> RoutineDefinition:
    """A registry entry as the ticker sees it."""
    return RoutineDefinition(
        name=name,
        version="bench",
        entrypoint="bench.py:Bench",
        class_name="Bench",
        trigger_param="tick",
        trigger=ScheduleTrigger(cron=cron),
        created_at=defined_at,
        updated_at=defined_at,
    )


def load(ticker: Ticker, crons: list[str]) -> float:
    """Arm one schedule per cron; returns seconds taken."""
    started = time.monotonic()
    now = datetime.now(UTC)
    for index, cron in enumerate(crons):
        ticker.on_definition(f"r{index}", definition(f"r{index}", cron, now), now)
    # What the service does once registry loading is quiet (see Ticker.freeze_loaded).
    ticker.freeze_loaded(quiet_s=0)
    return time.monotonic() - started


async def measure_lag(js: object, ticker: Ticker) -> tuple[list[float], dict[datetime, int]]:
    """Run the ticker for LAG_WINDOW_S; lag of each tick scheduled inside the window."""
    lags: list[float] = []
    bursts: dict[datetime, int] = {}
    window_start = datetime.now(UTC)

    def observe(fired: ScheduleFired, published_at: float) -> None:
        if fired.scheduled_at >= window_start:
            lags.append(published_at - fired.scheduled_at.timestamp())
            bursts[fired.scheduled_at] = bursts.get(fired.scheduled_at, 0) + 1

    ticker.lag_observer = observe
    tasks = [asyncio.create_task(ticker.loop()), asyncio.create_task(ticker.persist_loop())]
    window_start = datetime.now(UTC) + timedelta(seconds=1)
    await asyncio.sleep(LAG_WINDOW_S + 1)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return lags, bursts


async def raw_baseline(js: object, bursts: dict[datetime, int]) -> list[float]:
    """The same bursts published by a bare loop: sleep to the instant, publish, await acks."""
    from nats.js import JetStreamContext

    assert isinstance(js, JetStreamContext)
    lags: list[float] = []
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=2)
    sizes = list(bursts.values())
    for offset, size in enumerate(sizes):
        instant = start + timedelta(seconds=offset)
        await asyncio.sleep(max(0.0, instant.timestamp() - time.time()))

        async def one(index: int, at: datetime = instant) -> None:
            fired = ScheduleFired(
                routine=f"raw{index}", scheduled_at=at, fired_at=datetime.now(UTC)
            )
            await js.publish(
                subjects.SCHEDULE_FIRED,
                fired.model_dump_json().encode(),
                stream=subjects.STREAM,
                headers={"Nats-Msg-Id": fired.message_id()},
            )
            lags.append(time.time() - at.timestamp())

        await asyncio.gather(*(one(i) for i in range(size)))
    return lags


def cpu_seconds() -> float:
    """CPU time (user + system) of this process, from /proc via the os module."""
    return time.process_time()


async def busy_lag(js: Any, settings: TickerSettings, rng: random.Random, label: str) -> None:
    """Load hourly second-resolution crons (about 28 ticks a second) and print the lag."""
    kv = await js.key_value(subjects.TICKER_BUCKET)
    ticker = Ticker(settings, js, kv)
    busy = [f"{rng.randrange(60)} {rng.randrange(60)} * * * *" for _ in range(SCHEDULES)]
    took = load(ticker, busy)
    print(f"[{label}] loaded {SCHEDULES:,} schedules in {took:.1f}s", flush=True)
    lags, bursts = await measure_lag(js, ticker)
    raw = await raw_baseline(js, bursts)
    print(
        f"[{label}] ticks fired in {LAG_WINDOW_S:.0f}s: {len(lags)} "
        f"(bursts of {statistics.mean(bursts.values()):.0f} at each second)"
    )
    ours = Summary.of([lag * 1000 for lag in lags])
    base = Summary.of([lag * 1000 for lag in raw])
    print(f"[{label}] tick-to-publish lag: {ours.text()}")
    print(f"[{label}] raw nats-py same bursts: {base.text()}")
    print(
        f"[{label}] ratio: median {ratio(ours.median, base.median)}, "
        f"{ours.tail_name} {ratio(ours.tail, base.tail)}"
    )


async def idle_cpu(js: Any, settings: TickerSettings, rng: random.Random) -> None:
    """The same count of schedules, all due hours away: nothing should burn CPU."""
    kv = await js.key_value(subjects.TICKER_BUCKET)
    idle = Ticker(settings, js, kv)
    hour = (datetime.now(UTC) + timedelta(hours=12)).hour
    far = [f"{rng.randrange(60)} {rng.randrange(60)} {hour} * * *" for _ in range(SCHEDULES)]
    load(idle, far)
    tasks = [asyncio.create_task(idle.loop()), asyncio.create_task(idle.persist_loop())]
    await asyncio.sleep(1)
    cpu_before, wall_before = cpu_seconds(), time.monotonic()
    await asyncio.sleep(IDLE_WINDOW_S)
    cpu = cpu_seconds() - cpu_before
    wall = time.monotonic() - wall_before
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    # Baseline: a bare connected nats-py client idling over the same window.
    bare_before = cpu_seconds()
    await asyncio.sleep(IDLE_WINDOW_S)
    bare = cpu_seconds() - bare_before
    print(
        f"idle CPU with {SCHEDULES:,} schedules: {100 * cpu / wall:.2f}% of one core   "
        f"raw nats-py client idle {100 * bare / wall:.2f}%"
    )


async def run(store: Path) -> None:
    """Measure on the embedded server (fsync on every write), then with nats' default fsync."""
    rng = random.Random(7)
    for label, sync in (("fsync always", "always"), ("fsync nats default", None)):
        port = free_port()
        server = start_nats_server(store / label, port, store / f"{label}.log", sync)
        try:
            nc = await connect(f"nats://127.0.0.1:{port}", name="bench")
            js = nc.jetstream()
            settings = TickerSettings(nats_url=f"nats://127.0.0.1:{port}")
            await setup_bus(js, settings)
            await busy_lag(js, settings, rng, label)
            if sync is None:
                await idle_cpu(js, settings, rng)
            await nc.drain()
        finally:
            server.terminate()
            server.wait(timeout=10)


def main() -> None:
    """Entry point for `python -m bench ticker`."""
    with tempfile.TemporaryDirectory(prefix="mainspring-bench-") as tmp:
        asyncio.run(run(Path(tmp)))
