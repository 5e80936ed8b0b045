"""Trigger -> first line of run() with 10, 1,000 and 10,000 registered routines, beside the raw bus.

    python -m bench scale

Does a trigger's path grow with the registry? One system (bench.system, one runner, SQLite)
holds the measured routines of bench.latency (manual `stamp`, `upstream` -> `downstream`, and
at each size a fresh dataset `bench-<size>` watched by `appended-<size>`, so every size appends
to a table of the same length: a table's growing log would otherwise pass for the registry's
cost) and, at each size, enough idle routines to make up the total: half watch other
datasets, half wait on other upstream routines, so the dispatcher's lookups for the dataset
and `upstream` have the whole registry to search but only one routine to find.

Idle routines are written straight to the registry bucket with RoutineStore.put (copies of
the `appended` definition with another name and trigger, sharing its code bundle): ten
thousand `routine create` calls would measure the CLI, not the dispatcher. After each size
is registered, every path is warmed once, so the dispatcher's catalog has caught up before
measuring (until then an append reads the registry in full, on purpose).

Each size measures its raw baseline (bench.baselines: a stored publish to a pull consumer)
in the same run, right before its own figures, and the table ends with each path's median
and tail at the largest size over the smallest.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path

from bench.baselines import raw_delivery_latencies
from bench.latency import ROUTINES, Completions, completion, completion_warmup, dataset, manual
from bench.measure import Summary, print_table, ratio, save_results, smoke
from bench.system import BenchSystem
from mainspring.client import Client
from mainspring.contract import subjects
from mainspring.sdk.triggers import CompletionTrigger, DatasetAppendTrigger
from mainspring.storage import datasets
from mainspring.storage.registry import RoutineDefinition, RoutineStore

MEASURED = ("stamp", "upstream", "downstream")
SAMPLES = 10 if smoke() else 1000
SIZES = (6, 30) if smoke() else (10, 1_000, 10_000)
RAW = "raw JetStream publish -> pull consumer"
PATHS = ("manual submit -> run()", "completion -> run()", "dataset commit -> run()")
# Registry writes in flight at once while registering idle routines.
WRITES_IN_FLIGHT = 200


def sizes() -> tuple[int, ...]:
    """Registry sizes to measure (BENCH_SCALE_SIZES=10,100 overrides), each >= the measured four."""
    chosen = os.environ.get("BENCH_SCALE_SIZES")
    found = tuple(int(s) for s in chosen.split(",")) if chosen else SIZES
    if min(found) < len(MEASURED) + 1:
        raise SystemExit(f"every size must hold the {len(MEASURED) + 1} measured routines")
    return found


def idle_routine(template: RoutineDefinition, number: int) -> RoutineDefinition:
    """An idle routine: even numbers watch their own dataset, odd ones their own upstream."""
    trigger = (
        DatasetAppendTrigger(dataset=f"idle-dataset-{number}")
        if number % 2 == 0
        else CompletionTrigger(routine=f"idle-upstream-{number}")
    )
    return template.model_copy(
        update={"name": f"idle-{number:05d}", "trigger": trigger, "dataset_start": None}
    )


async def register_idle(store: RoutineStore, template: RoutineDefinition, numbers: range) -> None:
    """Write idle definitions straight to the registry bucket, a bounded number at a time."""
    for start in range(numbers.start, numbers.stop, WRITES_IN_FLIGHT):
        chunk = range(start, min(start + WRITES_IN_FLIGHT, numbers.stop))
        await asyncio.gather(*(store.put(idle_routine(template, n)) for n in chunk))


def appended_source(table: str) -> str:
    """bench.latency's dataset routine, watching `table`."""
    return ROUTINES["appended"].replace(
        'on_dataset_append("bench")', f"on_dataset_append({table!r})"
    )


async def watch_fresh_dataset(client: Client, home: Path, root: str, size: int) -> tuple[str, str]:
    """A new table and a routine watching it, for one size: (table, routine)."""
    table, routine = f"bench-{size}", f"appended-{size}"
    datasets.create(table, "id:int64", root=root)
    folder = home / "routines" / routine
    folder.mkdir(parents=True)
    (folder / "routine.py").write_text(appended_source(table))
    await client.create_routine(folder, routine)
    return table, routine


async def warm(client: Client, done: Completions, root: str, table: str, routine: str) -> None:
    """One run of each path, so the catalog has caught up and workers are warm."""
    await client.submit("stamp", source="manual")
    await done.next("stamp")
    await completion_warmup(client, done)
    await asyncio.to_thread(datasets.append, table, {"id": [-1]}, root=root)
    await done.next(routine)


async def measure(system: BenchSystem) -> dict[int, dict[str, Summary]]:
    """Every path's latency and the raw baseline at each registry size."""
    settings = system.settings()
    client = await Client.connect(settings)
    try:
        await client.wait_ready(timeout=60)
        root = settings.resolved_dataset_root()
        for name in MEASURED:
            folder = system.home / "routines" / name
            folder.mkdir(parents=True)
            (folder / "routine.py").write_text(ROUTINES[name])
            await client.create_routine(folder, name)
        done = Completions()
        await client.nc.subscribe(subjects.RUN_COMPLETED_ANY, cb=done.on_message)
        await client.nc.flush()
        store = await client.store()
        registered, idle = len(MEASURED), 0
        by_size: dict[int, dict[str, Summary]] = {}
        for size in sizes():
            table, routine = await watch_fresh_dataset(client, system.home, root, size)
            template = await store.get(routine)
            more = max(0, size - registered - 1)
            await register_idle(store, template, range(idle, idle + more))
            registered, idle = registered + 1 + more, idle + more
            await warm(client, done, root, table, routine)
            raw = await raw_delivery_latencies(system.url, SAMPLES)
            by_size[size] = {
                RAW: Summary.of(raw),
                PATHS[0]: Summary.of(await manual(client, done, SAMPLES)),
                PATHS[1]: Summary.of(await completion(client, done, SAMPLES)),
                PATHS[2]: Summary.of(await dataset(client, done, root, SAMPLES, table, routine)),
            }
            print(f"measured {registered} registered routines", flush=True)
        return by_size
    finally:
        await client.close()


def growth(by_size: dict[int, dict[str, Summary]]) -> dict[str, dict[str, float]]:
    """Each figure's median and tail at the largest size over the smallest."""
    smallest, largest = by_size[min(by_size)], by_size[max(by_size)]
    return {
        name: {
            "median": largest[name].median / smallest[name].median,
            "tail": largest[name].tail / smallest[name].tail,
        }
        for name in smallest
    }


def main() -> None:
    """Start a system, measure every size, print the tables."""
    with (
        tempfile.TemporaryDirectory(prefix="mainspring-bench-") as tmp,
        BenchSystem(home=Path(tmp) / "home") as system,
    ):
        by_size = asyncio.run(measure(system))
    rows = []
    for size, figures in by_size.items():
        raw = figures[RAW]
        for name, summary in figures.items():
            rows.append([f"{size:,}", name, summary.text(), ratio(summary.median, raw.median)])
    print("\nlatency by registry size (one runner, SQLite), each run triggered alone")
    print_table(["routines", "path", "latency", "median vs raw"], rows)
    grew = growth(by_size)
    smallest, largest = min(by_size), max(by_size)
    tail = by_size[largest][RAW].tail_name
    print(f"\n{largest:,} routines over {smallest:,}")
    print_table(
        ["path", "median ratio", f"{tail} ratio"],
        [[name, f"{g['median']:.2f}x", f"{g['tail']:.2f}x"] for name, g in grew.items()],
    )
    results = {"sizes": {str(size): figures for size, figures in by_size.items()}, "growth": grew}
    print(f"\nresults: {save_results('scale', results)}")


if __name__ == "__main__":
    main()
