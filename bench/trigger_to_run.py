"""Manual submit -> run() start latency with warm workers, beside a raw NATS request/reply.

Brings a whole system up (`mainspring up` machinery, own nats-server and home), submits
runs one after another and takes the time from just before `submit` to the first line of
run() (the routine returns time.time()). The raw baseline is a nats-py request/reply round
trip to a trivial responder on the same server, measured in the same process and run.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

from mainspring.client import Client
from mainspring.settings import Settings
from mainspring.up import System

RUNS = int(os.environ.get("BENCH_RUNS", "40"))
ROUND_TRIPS = 500
# MAINSPRING_WARM_WORKERS=false measures the cold path (a fresh interpreter per run).
WORKERS = (
    "cold" if os.environ.get("MAINSPRING_WARM_WORKERS", "").lower() in ("0", "false") else "warm"
)

ROUTINE = """
import time
from mainspring import Routine, on_complete


class Stamp(Routine):
    def run(self, event=on_complete("no-such-routine")) -> dict:
        return {"t": time.time()}
"""


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


async def raw_round_trips(client: Client) -> list[float]:
    """nats-py request/reply round trips to a responder on the same server (ms)."""

    async def echo(message: object) -> None:
        await message.respond(b"ok")  # type: ignore[attr-defined]

    subscription = await client.nc.subscribe("bench.echo", cb=echo)
    timings = []
    for _ in range(ROUND_TRIPS):
        started = time.perf_counter()
        await client.nc.request("bench.echo", b"ping", timeout=5)
        timings.append((time.perf_counter() - started) * 1000)
    await subscription.unsubscribe()
    return timings


async def trigger_to_run(client: Client) -> list[float]:
    """Submit -> run() start, one run at a time, letting the warm pool refill between (ms)."""
    timings = []
    for _ in range(RUNS):
        await asyncio.sleep(1.0)
        submitted = time.time()
        run_id = await client.submit("stamp", source="manual")
        run = await client.wait(run_id, timeout=60, poll_s=0.05)
        if run["status"] != "completed":
            raise RuntimeError(f"bench run failed: {run.get('error')}")
        timings.append((run["outputs"]["t"] - submitted) * 1000)
    return timings


async def measure(home: Path) -> tuple[list[float], list[float]]:
    settings = Settings(home=home)
    client = await Client.connect(settings)
    try:
        await client.wait_ready()
        folder = home / "stamp"
        folder.mkdir()
        (folder / "routine.py").write_text(ROUTINE)
        await client.create_routine(folder, "stamp")
        await client.wait(await client.submit("stamp"), timeout=60)  # warm up caches
        return await trigger_to_run(client), await raw_round_trips(client)
    finally:
        await client.close()


def main() -> None:
    """Print median and p99 of both, and their ratio."""
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        os.environ.pop("MAINSPRING_NATS_URL", None)
        os.environ["MAINSPRING_HOME"] = str(home)
        system = System(Settings(home=home))
        system.start()
        try:
            runs, raw = asyncio.run(measure(home))
        finally:
            system.stop()
    run_median, raw_median = statistics.median(runs), statistics.median(raw)
    print(
        f"trigger_to_run: submit -> run() start over {len(runs)} runs ({WORKERS} workers): "
        f"median {run_median:.1f} ms, p99 {percentile(runs, 0.99):.1f} ms"
    )
    print(
        f"trigger_to_run: raw nats-py request/reply over {len(raw)} round trips: "
        f"median {raw_median:.3f} ms, p99 {percentile(raw, 0.99):.3f} ms"
    )
    print(
        f"trigger_to_run: ratio (median run start / median round trip) {run_median / raw_median:.0f}x"
    )


if __name__ == "__main__":
    main()
