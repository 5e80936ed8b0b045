"""What a backlog costs while it waits: runs queued behind `max_concurrent=1`.

    python -m bench backlog                      # 10,000 waiting runs
    BENCH_BACKLOG_RUNS=2000 python -m bench backlog

One system (bench.system: the embedded server's settings, one runner, SQLite). A routine with
`max_concurrent = 1` gets one run that sleeps through the measurement, then BACKLOG_RUNS more
submitted behind it; once they are all requested, the CPU of every process (each service, its
workers, nats-server) is read over a quiet window while they wait. The baseline is the same
system with nothing queued, measured right before the backlog. Figures are percent of one
core; the target of the throughput work is under 5% while a backlog of 10,000 waits.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.measure import print_table, save_results, smoke, tree_cpu_seconds
from bench.system import BenchSystem
from mainspring.client import Client

RUNS = 100 if smoke() else int(os.environ.get("BENCH_BACKLOG_RUNS", "10000"))
WINDOW_S = 3.0 if smoke() else 30.0
SETTLE_S = 3.0 if smoke() else 10.0

ROUTINE = """
import time

from mainspring import Routine, on_schedule


class Serial(Routine):
    max_concurrent = 1

    def run(self, tick=on_schedule(cron="0 0 29 2 *")) -> dict:
        time.sleep(3600)
        return {}
"""


def cpu_percent(system: BenchSystem, seconds: float) -> dict[str, float]:
    """Percent of one core each part used over the next `seconds`."""
    pids = system.pids()
    before = {label: tree_cpu_seconds(pid) for label, pid in pids.items()}
    time.sleep(seconds)
    return {
        label: (tree_cpu_seconds(pid) - before[label]) * 100 / seconds
        for label, pid in pids.items()
    }


async def fill_backlog(system: BenchSystem) -> float:
    """Register the routine, start its first run, queue RUNS behind it; seconds to submit."""
    client = await Client.connect(system.settings())
    try:
        await client.wait_ready(timeout=60)
        folder = system.home / "serial"
        folder.mkdir(exist_ok=True)
        (folder / "routine.py").write_text(ROUTINE)
        await client.create_routine(folder, "serial")
        first = await client.submit("serial", source="manual")
        for _ in range(600):
            run = await client.get_run(first)
            if run is not None and run["status"] == "running":
                break
            await asyncio.sleep(0.1)
        else:
            raise SystemExit("backlog: the first run did not start within 60 s")
        started = time.monotonic()
        for offset in range(0, RUNS, 200):
            batch = min(200, RUNS - offset)
            await asyncio.gather(*(client.submit("serial", source="manual") for _ in range(batch)))
        return time.monotonic() - started
    finally:
        await client.close()


def main() -> None:
    """Measure the idle system, then the same system with the backlog waiting."""
    with (
        tempfile.TemporaryDirectory(prefix="mainspring-bench-") as tmp,
        BenchSystem(
            home=Path(tmp) / "home", env_overrides={"MAINSPRING_LOG_LEVEL": "ERROR"}
        ) as system,
    ):
        asyncio.run(_wait_ready(system))
        # The runner's warm workers import their modules after it is ready: not idle yet.
        time.sleep(SETTLE_S)
        idle = cpu_percent(system, WINDOW_S)
        submit_s = asyncio.run(fill_backlog(system))
        # Let the requests reach the runner and the recorder before the quiet window.
        time.sleep(SETTLE_S)
        waiting = cpu_percent(system, WINDOW_S)
    rows = [[label, f"{idle[label]:.1f}%", f"{waiting[label]:.1f}%"] for label in sorted(waiting)]
    total_idle, total_waiting = sum(idle.values()), sum(waiting.values())
    rows.append(["total", f"{total_idle:.1f}%", f"{total_waiting:.1f}%"])
    print(
        f"\nbacklog: {RUNS} runs waiting behind max_concurrent=1 (submitted in {submit_s:.0f}s), "
        f"CPU over {WINDOW_S:.0f}s in percent of one core"
    )
    print_table(["part", "idle system (baseline)", "backlog waiting"], rows)
    results: dict[str, Any] = {
        "runs": RUNS,
        "window_s": WINDOW_S,
        "submit_s": submit_s,
        "cpu_percent_idle": idle,
        "cpu_percent_waiting": waiting,
        "total_idle": total_idle,
        "total_waiting": total_waiting,
    }
    print(f"\nresults: {save_results('backlog', results)}")


async def _wait_ready(system: BenchSystem) -> None:
    client = await Client.connect(system.settings())
    try:
        await client.wait_ready(timeout=60)
    finally:
        await client.close()


if __name__ == "__main__":
    main()
