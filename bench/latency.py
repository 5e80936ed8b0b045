"""Trigger -> first line of run(), for each kind of trigger, on an idle system, beside the raw bus.

    python -m bench latency

One system (bench.system: the embedded server's settings, one runner, SQLite). Each routine
returns `time.time()` taken on the first line of its run(); the trigger's instant is taken
by the benchmark (manual submit: just before `submit`; dataset: right after the commit is
in the log; completion: the upstream run's recorded `finished_at`; schedule: the nominal
tick). Runs are triggered one after another, so each figure is latency, not queueing.

The baseline is nats-py on the same server: publish a stored message (with a msg id) and
wait until a durable pull consumer holds it, one at a time, the shape of every hop a
trigger takes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.baselines import raw_delivery_latencies
from bench.measure import Summary, commit_time, print_table, ratio, save_results, smoke
from bench.system import BenchSystem
from mainspring.client import Client
from mainspring.contract import subjects
from mainspring.storage import datasets

SAMPLES = 10 if smoke() else 1000
SCHEDULE_S = 5.0 if smoke() else 60.0

ROUTINES = {
    "stamp": """
import time
from mainspring import Routine, on_schedule

class Stamp(Routine):
    def run(self, event=on_schedule(cron="0 0 29 2 *")) -> dict:
        return {"t": time.time()}
""",
    "upstream": """
from mainspring import Routine, on_schedule

class Upstream(Routine):
    def run(self, event=on_schedule(cron="0 0 29 2 *")) -> dict:
        return {}
""",
    "downstream": """
import time
from mainspring import Routine, on_workflow_success

class Downstream(Routine):
    max_fires = None  # a benchmark fires it on purpose, far past the breaker's 300 a minute
    def run(self, done=on_workflow_success("upstream")) -> dict:
        return {"t": time.time()}
""",
    "appended": """
import time
from mainspring import Routine, on_dataset_append

class Appended(Routine):
    max_fires = None  # a benchmark fires it on purpose, far past the breaker's 300 a minute
    def run(self, rows=on_dataset_append("bench")) -> dict:
        return {"t": time.time()}
""",
    "ticked": """
import time
from mainspring import Routine, on_schedule

class Ticked(Routine):
    max_fires = None  # a benchmark fires it on purpose, far past the breaker's 300 a minute
    def run(self, tick=on_schedule(cron="* * * * * *")) -> dict:
        return {"t": time.time(), "scheduled_at": tick.scheduled_at.timestamp()}
""",
}


class Completions:
    """Completed runs as they are published, by routine."""

    def __init__(self) -> None:
        self.queues: dict[str, asyncio.Queue[dict[str, Any]]] = {}

    def of(self, routine: str) -> asyncio.Queue[dict[str, Any]]:
        """The queue of one routine's completions."""
        return self.queues.setdefault(routine, asyncio.Queue())

    async def on_message(self, message: Any) -> None:
        """Called for every completion on the bus."""
        with contextlib.suppress(ValueError):
            body = json.loads(message.data)
            self.of(str(body.get("routine"))).put_nowait(body)

    async def next(self, routine: str) -> dict[str, Any]:
        """The next completion of `routine`; a failed run stops the benchmark with its error."""
        body = await asyncio.wait_for(self.of(routine).get(), 60)
        if body.get("status") != "completed":
            raise RuntimeError(
                f"benchmark run of {routine} {body.get('status')}: {body.get('error')}"
            )
        return body


def seconds_of(value: str) -> float:
    """An ISO timestamp from a message as Unix seconds."""
    return datetime.fromisoformat(value).timestamp()


async def manual(client: Client, done: Completions, count: int = SAMPLES) -> list[float]:
    """Submit -> run() (ms)."""
    samples = []
    for _ in range(count):
        submitted = time.time()
        await client.submit("stamp", source="manual")
        body = await done.next("stamp")
        samples.append((body["outputs"]["t"] - submitted) * 1000)
    return samples


async def completion(client: Client, done: Completions, count: int = SAMPLES) -> list[float]:
    """Upstream run finished -> downstream run() (ms)."""
    samples = []
    for _ in range(count):
        await client.submit("upstream", source="manual")
        upstream = await done.next("upstream")
        downstream = await done.next("downstream")
        samples.append((downstream["outputs"]["t"] - seconds_of(upstream["finished_at"])) * 1000)
    return samples


async def dataset(
    client: Client,
    done: Completions,
    root: str,
    count: int = SAMPLES,
    table: str = "bench",
    routine: str = "appended",
) -> list[float]:
    """Append committed -> run() (ms)."""
    samples = []
    for row in range(count):

        def write(value: int = row) -> float:
            return commit_time(root, table, datasets.append(table, {"id": [value]}, root=root))

        committed = await asyncio.to_thread(write)
        body = await done.next(routine)
        samples.append((body["outputs"]["t"] - committed) * 1000)
    return samples


async def schedule(client: Client, done: Completions, folder: Path) -> list[float]:
    """Nominal tick -> run() (ms), for SCHEDULE_S seconds of a per-second cron."""
    await client.create_routine(folder, "ticked")
    samples = []
    deadline = time.monotonic() + SCHEDULE_S
    while time.monotonic() < deadline:
        body = await done.next("ticked")
        samples.append((body["outputs"]["t"] - body["outputs"]["scheduled_at"]) * 1000)
    return samples


async def measure(system: BenchSystem) -> dict[str, Summary]:
    """Every latency figure and the baseline."""
    settings = system.settings()
    client = await Client.connect(settings)
    try:
        await client.wait_ready(timeout=60)
        root = settings.resolved_dataset_root()
        datasets.create("bench", "id:int64", root=root)
        folders = {}
        for name, source in ROUTINES.items():
            folder = system.home / "routines" / name
            folder.mkdir(parents=True)
            (folder / "routine.py").write_text(source)
            folders[name] = folder
        for name in ("stamp", "upstream", "downstream", "appended"):
            await client.create_routine(folders[name], name)
        done = Completions()
        await client.nc.subscribe(subjects.RUN_COMPLETED_ANY, cb=done.on_message)
        await client.nc.flush()
        # Warm every path once (bundles unpacked, workers started, watcher watching).
        await client.submit("stamp", source="manual")
        await done.next("stamp")
        await completion_warmup(client, done)
        await asyncio.to_thread(datasets.append, "bench", {"id": [-1]}, root=root)
        await done.next("appended")

        raw = await raw_delivery_latencies(system.url, SAMPLES)
        figures = {
            "raw JetStream publish -> pull consumer": Summary.of(raw),
            "manual submit -> run()": Summary.of(await manual(client, done)),
            "completion -> run()": Summary.of(await completion(client, done)),
            "dataset commit -> run()": Summary.of(await dataset(client, done, root)),
            "schedule tick -> run()": Summary.of(await schedule(client, done, folders["ticked"])),
        }
        return figures
    finally:
        await client.close()


async def completion_warmup(client: Client, done: Completions) -> None:
    """One upstream/downstream pair before measuring."""
    await client.submit("upstream", source="manual")
    await done.next("upstream")
    await done.next("downstream")


def main() -> None:
    """Start a system, measure, print the table."""
    with (
        tempfile.TemporaryDirectory(prefix="mainspring-bench-") as tmp,
        BenchSystem(home=Path(tmp) / "home") as system,
    ):
        figures = asyncio.run(measure(system))
    raw = figures["raw JetStream publish -> pull consumer"]
    rows = [
        [name, summary.text(), ratio(summary.median, raw.median)]
        for name, summary in figures.items()
    ]
    print("\nlatency on an idle system (one runner, SQLite), each run triggered alone")
    print_table(["path", "latency", "median vs raw"], rows)
    print(f"\nresults: {save_results('latency', {'figures': figures})}")


if __name__ == "__main__":
    main()
