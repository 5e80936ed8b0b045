"""Trigger -> first line of run() while a background load of half the maximum rate runs.

    python -m bench latency-under-load
    BENCH_MAX_RATE=160 python -m bench latency-under-load   # skip measuring the maximum

One system (bench.system: the embedded server's settings, one runner, SQLite). First the
maximum no-op rate of this system is measured as bench.throughput does (a closed loop
keeping a backlog of manual submits in flight; completions per second over the steady part)
unless BENCH_MAX_RATE gives it. Then a background load submits a no-op routine at half that
rate, paced (one submit every 2/max seconds, a late one sent at once), and while it runs the latency
paths of bench.latency are measured: manual submit, upstream completion and dataset commit
to the first line of run(), each run triggered alone (one measured run at a time, beside the
background's runs). The raw baseline is measured under the same background load in the
same run: a stored publish to a durable pull consumer on the same server. The achieved
background rate (submitted and completed per second over the measurement) is reported
beside the target, with the runs still unfinished at the end, so a background that fell
behind shows as such.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import latency
from bench.baselines import raw_delivery_latencies
from bench.latency import Completions
from bench.measure import Summary, print_table, ratio, save_results, smoke
from bench.system import BenchSystem
from bench.throughput import CompletionCounter, closed_loop_load, wait_until
from mainspring.base.kv import key_token
from mainspring.client import Client
from mainspring.contract import subjects
from mainspring.storage import datasets

# Manual submits: a p99 needs at least 1,000 samples (bench.measure).
SAMPLES = 10 if smoke() else 1000
MAX_LOAD_S = 3.0 if smoke() else 20.0
MAX_WARMUP_S = 1.0 if smoke() else 5.0
BACKLOG = 50 if smoke() else 400
# The background load's share of the maximum rate.
LOAD_SHARE = 0.5
# Submits still waiting for the bus's ack at most; a pacer past it stops and says so.
MAX_IN_FLIGHT = 200

NOOP = """
from mainspring import Routine, on_schedule


class Noop(Routine):
    def run(self, event=on_schedule(cron="0 0 29 2 *")) -> dict:
        return {}
"""

MEASURED = ("stamp", "upstream", "downstream", "appended")


def given_max_rate() -> float | None:
    """BENCH_MAX_RATE (no-op runs per second), when set: the maximum is not measured."""
    text = os.environ.get("BENCH_MAX_RATE", "").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if value <= 0:
        raise SystemExit(f"BENCH_MAX_RATE={text!r} is not a positive rate: give runs per second")
    return value


async def max_rate(client: Client, counter: CompletionCounter) -> float:
    """No-op completions per second at steady state under a closed-loop backlog."""
    before = counter.count
    load = asyncio.create_task(closed_loop_load(client, counter, MAX_LOAD_S, BACKLOG))
    await asyncio.sleep(MAX_WARMUP_S)
    window_start, count_start = time.monotonic(), counter.count
    submitted = await load
    rate = (counter.count - count_start) / (time.monotonic() - window_start)
    await wait_until(
        lambda: counter.count - before >= submitted, 300, "the maximum-rate runs ending"
    )
    return rate


@dataclass
class Pacer:
    """Submits the no-op routine at a fixed rate until stopped; counts what it submitted."""

    client: Client
    rate: float
    submitted: int = 0
    started: float = 0.0
    stopped: float = 0.0

    async def run(self, stop: asyncio.Event) -> None:
        """One submit every 1/rate seconds, on schedule: a late tick catches up, never skips."""
        interval = 1 / self.rate
        in_flight: set[asyncio.Task[str]] = set()
        self.started = next_at = time.monotonic()
        while not stop.is_set():
            now = time.monotonic()
            if now < next_at:
                await asyncio.sleep(next_at - now)
                continue
            if len(in_flight) >= MAX_IN_FLIGHT:
                raise RuntimeError(
                    f"the background load fell behind: {len(in_flight)} submits unacknowledged "
                    f"at {self.rate:.1f}/s; give a lower BENCH_MAX_RATE"
                )
            task = asyncio.create_task(self.client.submit("noop", source="manual"))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
            self.submitted += 1
            next_at += interval
        self.stopped = time.monotonic()
        await asyncio.gather(*in_flight)


async def measure_paths(
    system: BenchSystem, client: Client, done: Completions, root: str
) -> dict[str, Summary]:
    """The raw baseline and each latency path, one after another, under whatever load runs."""
    raw = await raw_delivery_latencies(system.url, SAMPLES)
    return {
        "raw JetStream publish -> pull consumer": Summary.of(raw),
        "manual submit -> run()": Summary.of(await latency.manual(client, done, SAMPLES)),
        "completion -> run()": Summary.of(await latency.completion(client, done, SAMPLES)),
        "dataset commit -> run()": Summary.of(await latency.dataset(client, done, root, SAMPLES)),
    }


async def prepare(system: BenchSystem, client: Client, root: str) -> None:
    """The measured routines and the no-op, registered and warmed."""
    datasets.create("bench", "id:int64", root=root)
    sources = {name: latency.ROUTINES[name] for name in MEASURED} | {"noop": NOOP}
    for name, source in sources.items():
        folder = system.home / "routines" / name
        folder.mkdir(parents=True)
        (folder / "routine.py").write_text(source)
        await client.create_routine(folder, name)


async def measure(system: BenchSystem, given: float | None) -> dict[str, Any]:
    """The maximum rate (unless given), then every latency figure under half of it."""
    settings = system.settings()
    client = await Client.connect(settings)
    try:
        await client.wait_ready(timeout=60)
        root = settings.resolved_dataset_root()
        await prepare(system, client, root)
        done = Completions()
        for name in MEASURED:
            # Only the measured routines' completions: the background's are counted apart.
            await client.nc.subscribe(
                f"{subjects.RUN_COMPLETED}.{key_token(name)}.*", cb=done.on_message
            )
        counter = CompletionCounter()
        await client.nc.subscribe(
            f"{subjects.RUN_COMPLETED}.{key_token('noop')}.*", cb=counter.on_message
        )
        await client.nc.flush()
        # Warm every path once (bundles unpacked, workers started, watcher watching).
        await client.submit("stamp", source="manual")
        await done.next("stamp")
        await latency.completion_warmup(client, done)
        await asyncio.to_thread(datasets.append, "bench", {"id": [-1]}, root=root)
        await done.next("appended")
        await asyncio.gather(*(client.submit("noop", source="manual") for _ in range(20)))
        await wait_until(lambda: counter.count >= 20, 120, "20 warm-up no-op runs completing")

        maximum = given if given is not None else await max_rate(client, counter)
        pacer = Pacer(client, maximum * LOAD_SHARE)
        stop = asyncio.Event()
        completed_before = counter.count
        background = asyncio.create_task(pacer.run(stop))
        try:
            await asyncio.sleep(1.0)  # the load reaches its pace before anything is measured
            measuring_from, completed_from = time.monotonic(), counter.count
            submitted_from = pacer.submitted
            figures = await measure_paths(system, client, done, root)
            seconds = time.monotonic() - measuring_from
            completed = counter.count - completed_from
            submitted = pacer.submitted - submitted_from
        finally:
            stop.set()
            await background
        unfinished = pacer.submitted - (counter.count - completed_before)
        await wait_until(
            lambda: counter.count - completed_before >= pacer.submitted,
            300,
            "the background runs ending",
        )
        return {
            "max_runs_per_s": maximum,
            "max_rate_given": given is not None,
            "background": {
                "target_per_s": pacer.rate,
                "submitted_per_s": submitted / seconds,
                "completed_per_s": completed / seconds,
                "unfinished_at_end": unfinished,
                "failed": len(counter.failed),
                "first_failure": counter.failed[0] if counter.failed else None,
                "measured_s": seconds,
            },
            "figures": figures,
        }
    finally:
        await client.close()


def report(results: dict[str, Any]) -> None:
    """The latency table beside the raw baseline, then what the background load achieved."""
    figures: dict[str, Summary] = results["figures"]
    raw = figures["raw JetStream publish -> pull consumer"]
    rows = [
        [name, summary.text(), ratio(summary.median, raw.median), ratio(summary.tail, raw.tail)]
        for name, summary in figures.items()
    ]
    background = results["background"]
    how = "given by BENCH_MAX_RATE" if results["max_rate_given"] else "measured"
    print(
        f"\nlatency under a background load of {LOAD_SHARE:.0%} of the maximum "
        f"({results['max_runs_per_s']:.1f} no-op runs/s, {how}; one runner, SQLite)"
    )
    print_table(["path", "latency", "median vs raw", f"{raw.tail_name} vs raw"], rows)
    print(
        f"\nbackground: target {background['target_per_s']:.1f} runs/s, submitted "
        f"{background['submitted_per_s']:.1f}/s, completed {background['completed_per_s']:.1f}/s "
        f"over {background['measured_s']:.0f}s; {background['unfinished_at_end']} unfinished "
        f"at the end, {background['failed']} failed"
    )
    if background["first_failure"]:
        print(f"first background failure: {background['first_failure']}")


def main() -> None:
    """Start a system, measure, print the table."""
    given = given_max_rate()  # a bad value stops before any system starts
    with (
        tempfile.TemporaryDirectory(prefix="mainspring-bench-") as tmp,
        BenchSystem(home=Path(tmp) / "home") as system,
    ):
        results = asyncio.run(measure(system, given))
    report(results)
    print(f"\nresults: {save_results('latency_under_load', results)}")


if __name__ == "__main__":
    main()
