"""How fast a local append reaches the bus and the dispatcher, beside raw JetStream latency.

    python -m bench.dataset_latency [--appends 50]

Starts a nats-server, the dataset watcher and the dispatcher as processes, registers a
routine on a dataset, then appends one row at a time and times, from the moment the commit
is in the log: `dataset.appended` on the bus (watcher) and `run.requested` (dispatcher).
The baseline is bench.baselines.raw_delivery_latencies: a stored publish to a pull consumer
on the same server (a run.* subject of its own would not be stored: the bus stream lists
its run subjects one by one).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from nats.aio.msg import Msg

from bench.baselines import raw_delivery_latencies
from bench.measure import Summary, commit_time
from mainspring.apps.up import free_port, service_command, start_nats_server
from mainspring.base.settings import Settings
from mainspring.client import Client
from mainspring.runtime.bus import set_up_now
from mainspring.storage import datasets

ROUTINE = """
from mainspring import Routine, on_dataset_append


class Count(Routine):
    def run(self, new_rows=on_dataset_append("bench")):
        return {"rows": new_rows.added_records}
"""


def arrival_recorder(queue: asyncio.Queue[float]) -> Callable[[Msg], Awaitable[None]]:
    """A subscription callback putting each message's arrival time on a queue."""

    async def record(_message: Msg) -> None:
        queue.put_nowait(time.time())  # wall clock, as the commit file's mtime

    return record


def summary(samples_ms: list[float]) -> str:
    """Median and p99 (or max, below 1,000 samples) of a list of milliseconds."""
    return Summary.of(samples_ms).text()


async def measure(home: Path, url: str, count: int) -> tuple[list[float], list[float], list[float]]:
    """(append commit time, commit -> dataset.appended, commit -> run.requested) in ms."""
    settings = Settings(nats_url=url, home=home)
    root = settings.resolved_dataset_root()
    datasets.create("bench", "id:int64,text:string", root=root)
    client = await Client.connect(settings)
    folder = home / "routine"
    folder.mkdir()
    (folder / "count.py").write_text(ROUTINE)
    await client.create_routine(folder, "count")
    await asyncio.sleep(2.0)  # let the dispatcher's registry and the watcher settle
    announced: asyncio.Queue[float] = asyncio.Queue()
    requested: asyncio.Queue[float] = asyncio.Queue()
    await client.nc.subscribe("dataset.appended", cb=arrival_recorder(announced))
    await client.nc.subscribe("run.requested", cb=arrival_recorder(requested))
    await client.nc.flush()
    writes, to_bus, to_dispatcher = [], [], []
    for index in range(count):

        def write(row: int = index) -> tuple[float, float]:
            began = time.time()
            version = datasets.append("bench", {"id": [row], "text": ["x"]}, root=root)
            return began, commit_time(root, "bench", version)

        began, committed = await asyncio.to_thread(write)
        on_bus = await asyncio.wait_for(announced.get(), 10)
        at_dispatcher = await asyncio.wait_for(requested.get(), 10)
        writes.append((committed - began) * 1000)
        to_bus.append((on_bus - committed) * 1000)
        to_dispatcher.append((at_dispatcher - committed) * 1000)
        await asyncio.sleep(0.02)
    await client.close()
    return writes, to_bus, to_dispatcher


def main() -> None:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--appends", type=int, default=50)
    args, _ = parser.parse_known_args()  # names given to `python -m bench` pass through
    with tempfile.TemporaryDirectory(prefix="mainspring-bench-") as tmp:
        home = Path(tmp)
        port = free_port()
        server = start_nats_server(home / "nats", port, home / "nats.log")
        url = f"nats://127.0.0.1:{port}"
        env = {**os.environ, "MAINSPRING_NATS_URL": url, "MAINSPRING_HOME": str(home)}
        env.pop("MAINSPRING_DATASET_ROOT", None)
        services = []
        try:
            set_up_now(Settings(nats_url=url))
            for name in ("dataset_watcher", "dispatcher"):
                log = (home / f"{name}.log").open("ab")
                services.append(
                    subprocess.Popen(service_command(name), env=env, stdout=log, stderr=log)
                )

            async def go() -> tuple[list[float], ...]:
                raw = await raw_delivery_latencies(url, args.appends)
                return (raw, *(await measure(home, url, args.appends)))

            raw, writes, to_bus, to_dispatcher = asyncio.run(go())
        finally:
            for process in services:
                process.terminate()
                process.wait(timeout=10)
            server.terminate()
            server.wait(timeout=10)
    base = statistics.median(raw)
    print(f"dataset append latency, {args.appends} single-row appends on a local root")
    print(f"  baseline: JetStream publish -> pull consumer  {summary(raw)}")
    print(f"  append call until committed                {summary(writes)}")
    print(
        f"  commit -> dataset.appended (watcher)       {summary(to_bus)}"
        f"  ratio median {statistics.median(to_bus) / base:5.1f}x baseline"
    )
    print(
        f"  commit -> run.requested (dispatcher)       {summary(to_dispatcher)}"
        f"  ratio median {statistics.median(to_dispatcher) / base:5.1f}x baseline"
    )


if __name__ == "__main__":
    main()
