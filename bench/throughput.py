"""No-op runs per second at steady state, and what one run costs, beside the raw bus.

    python -m bench throughput            # every configuration (about 10 minutes)
    BENCH_CONFIGS=worker-2-sqlite python -m bench throughput

For each configuration (runner replicas x database x isolation) a fresh system is started
(bench.system: the embedded server's settings). A closed loop keeps a bounded backlog of
manual submits of a no-op routine in flight for the load period; nothing else runs. The
rate comes from the run records' own `finished_at` timestamps, read from the database
after every run was recorded, over the steady part of the load (the first seconds are
warm-up). The baseline is nats-py's pipelined publish rate of stored messages on the same
server, measured right before and right after the load.

The cost table divides what the server and the kernel counted over the whole load (from the
first submit until every run is recorded) by the number of runs: messages stored per
stream, JetStream API calls, messages each service published and had delivered, database
transactions (PostgreSQL's own counter), and CPU milliseconds of each process, its workers
included.

While one configuration runs, a page of 50 runs is queried from the recorder 30 times a
second (in a second load period, so the throughput figures carry no query load).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

from bench.baselines import raw_publish_rate
from bench.measure import (
    ServerCounters,
    Summary,
    print_table,
    ratio,
    save_results,
    smoke,
    tree_cpu_seconds,
)
from bench.system import BenchSystem
from mainspring.client import Client
from mainspring.contract import subjects
from mainspring.contract.queries import RunQuery
from mainspring.storage.records import as_utc, normalise_url
from tests.harness import POSTGRES_ADMIN_URL, create_postgres_database, drop_postgres_database

ROUTINE = """
from mainspring import Routine, on_schedule


class Noop(Routine):
    isolation = "{isolation}"

    def run(self, event=on_schedule(cron="0 0 29 2 *")) -> dict:
        return {{}}
"""

LOAD_S = 4.0 if smoke() else 40.0
WARMUP_S = 1.0 if smoke() else 8.0
BASELINE_S = 1.0 if smoke() else 5.0
BACKLOG = 50 if smoke() else 400
QUERY_HZ = 30.0


@dataclass(frozen=True)
class Config:
    """One system shape to measure."""

    isolation: str
    runners: int
    database: str

    @property
    def name(self) -> str:
        """`worker-2-sqlite`."""
        return f"{self.isolation}-{self.runners}-{self.database}"


ALL_CONFIGS = [
    Config(isolation, runners, database)
    for isolation in ("worker", "process")
    for database in ("sqlite", "postgres")
    for runners in (1, 2)
]
QUERY_CONFIG = "worker-2-sqlite"


def chosen_configs() -> list[Config]:
    """BENCH_CONFIGS=a,b picks configurations by name; smoke runs one."""
    names = os.environ.get("BENCH_CONFIGS", "worker-1-sqlite" if smoke() else "")
    if not names:
        return ALL_CONFIGS
    by_name = {config.name: config for config in ALL_CONFIGS}
    unknown = [n for n in names.split(",") if n not in by_name]
    if unknown:
        raise SystemExit(f"BENCH_CONFIGS: no configuration {unknown}: choose from {list(by_name)}")
    return [by_name[n] for n in names.split(",")]


# --- the database ---------------------------------------------------------------------------


def postgres_commits(url: str) -> int | None:
    """Transactions committed in the database so far (PostgreSQL's statistics)."""
    if not url.startswith("postgresql"):
        return None
    import psycopg

    name = url.rsplit("/", 1)[1]
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
        # Statistics are cached per transaction and flushed by backends about once a second.
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = %s", (name,)
        ).fetchone()
    return int(row[0]) if row else None


class RunHistoryReader:
    """Reads the run history database directly: the figures come from the records themselves."""

    def __init__(self, database_url: str) -> None:
        self.engine = create_engine(normalise_url(database_url))

    def recorded(self) -> int:
        """No-op runs recorded with a terminal status so far."""
        with self.engine.connect() as conn:
            count = conn.execute(
                text(
                    "SELECT count(*) FROM runs WHERE routine = 'noop' "
                    "AND status IN ('completed', 'failed', 'cancelled')"
                )
            ).scalar_one()
        return int(count)

    def finish_times(self) -> list[datetime]:
        """`finished_at` (UTC) of every completed no-op run."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                text("SELECT finished_at FROM runs WHERE routine = 'noop' AND status = 'completed'")
            ).all()
        times = []
        for (value,) in rows:
            parsed = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
            times.append(as_utc(parsed))
        return [t for t in times if t is not None]

    def close(self) -> None:
        """Release the connections."""
        self.engine.dispose()


# --- the load -------------------------------------------------------------------------------


class CompletionCounter:
    """Counts run completions as they are published (core subscription, nothing stored)."""

    def __init__(self) -> None:
        self.count = 0
        self.failed: list[str] = []

    async def on_message(self, message: Any) -> None:
        """Called for every completion on the bus."""
        self.count += 1
        with contextlib.suppress(ValueError):
            body = json.loads(message.data)
            if body.get("status") != "completed":
                self.failed.append(str(body.get("error")))


async def closed_loop_load(
    client: Client, counter: CompletionCounter, seconds: float, backlog: int
) -> int:
    """Keep about `backlog` runs submitted and unfinished for `seconds`; returns runs submitted."""
    submitted = 0
    deadline = time.monotonic() + seconds
    baseline = counter.count
    while time.monotonic() < deadline:
        room = backlog - (submitted - (counter.count - baseline))
        if room <= 0:
            await asyncio.sleep(0.005)
            continue
        batch = min(room, 50)
        await asyncio.gather(*(client.submit("noop", source="manual") for _ in range(batch)))
        submitted += batch
    return submitted


async def wait_until(check: Any, timeout: float, what: str) -> None:
    """Poll a synchronous check until true; fail naming what did not happen."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"benchmark stalled: {what} did not happen within {timeout:.0f}s")
        await asyncio.sleep(0.1)


async def query_latencies(client: Client, seconds: float) -> list[float]:
    """Page-of-50 queries to the recorder at QUERY_HZ for `seconds` (ms each)."""
    samples: list[float] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.perf_counter()
        await client.list_runs(RunQuery(routine="noop", limit=50))
        samples.append((time.perf_counter() - started) * 1000)
        await asyncio.sleep(max(0.0, 1 / QUERY_HZ - (time.perf_counter() - started)))
    return samples


# --- one configuration ----------------------------------------------------------------------


async def measure_config(system: BenchSystem, config: Config) -> dict[str, Any]:
    """Load one running system and return its figures."""
    client = await Client.connect(system.settings())
    database_url = system.settings().resolved_database_url()
    history = RunHistoryReader(database_url)
    try:
        await client.wait_ready(timeout=60)
        folder = system.home / "noop"
        folder.mkdir(exist_ok=True)
        (folder / "routine.py").write_text(ROUTINE.format(isolation=config.isolation))
        await client.create_routine(folder, "noop")
        counter = CompletionCounter()
        await client.nc.subscribe(subjects.RUN_COMPLETED_ANY, cb=counter.on_message)
        # Warm the path (code bundle unpacked, workers started) before anything is measured.
        await asyncio.gather(*(client.submit("noop", source="manual") for _ in range(20)))
        await wait_until(lambda: counter.count >= 20, 120, "20 warm-up runs completing")

        raw_before = await raw_publish_rate(system.url, BASELINE_S)
        pids = system.pids()
        cpu_before = {label: tree_cpu_seconds(pid) for label, pid in pids.items()}
        server_before = ServerCounters.read(system.monitor_port)
        commits_before = postgres_commits(database_url)
        completed_before = counter.count
        recorded_before = history.recorded()

        load_started = datetime.now(UTC)
        submitted = await closed_loop_load(client, counter, LOAD_S, BACKLOG)
        load_ended = datetime.now(UTC)
        drain_started = time.monotonic()
        await wait_until(
            lambda: counter.count - completed_before >= submitted, 300, "every submitted run ending"
        )
        await wait_until(
            lambda: history.recorded() - recorded_before >= submitted,
            300,
            "the recorder recording every run",
        )
        drain_s = time.monotonic() - drain_started

        server = ServerCounters.read(system.monitor_port).minus(server_before)
        commits_after = postgres_commits(database_url)
        cpu = {
            label: tree_cpu_seconds(pid) - cpu_before[label]
            for label, pid in system.pids().items()
            if label in cpu_before
        }
        raw_after = await raw_publish_rate(system.url, BASELINE_S)

        # Steady state: finishes after the warm-up, up to the end of the load.
        finished = [t for t in history.finish_times() if load_started <= t <= load_ended]
        window_start = load_started.timestamp() + WARMUP_S
        steady = [t for t in finished if t.timestamp() >= window_start]
        window_s = load_ended.timestamp() - window_start
        runs_per_s = len(steady) / window_s if window_s > 0 else 0.0

        queries: Summary | None = None
        if config.name == QUERY_CONFIG and not smoke():
            load = asyncio.create_task(closed_loop_load(client, counter, LOAD_S, BACKLOG))
            samples = await query_latencies(client, LOAD_S)
            await load
            queries = Summary.of(samples)

        per_run = max(1, submitted)
        transactions = (
            (commits_after - commits_before) / per_run
            if commits_after is not None and commits_before is not None
            else None
        )
        return {
            "config": config.name,
            "runs_per_s": runs_per_s,
            "steady_runs": len(steady),
            "window_s": window_s,
            "submitted": submitted,
            "failed": len(counter.failed),
            "first_failure": counter.failed[0] if counter.failed else None,
            "recorder_drain_s": drain_s,
            "raw_publish_per_s_before": raw_before,
            "raw_publish_per_s_after": raw_after,
            "query_page_ms": queries,
            "cost_per_run": {
                "stored_messages": {
                    name: count / per_run for name, count in server.stream_messages.items() if count
                },
                "jetstream_api_calls": server.api_calls / per_run,
                "published_by": {k: v / per_run for k, v in server.sent_by.items() if v},
                "delivered_to": {k: v / per_run for k, v in server.received_by.items() if v},
                "database_transactions": transactions,
                "cpu_ms": {label: seconds * 1000 / per_run for label, seconds in cpu.items()},
            },
        }
    finally:
        history.close()
        await client.close()


def run_config(config: Config, tmp: Path) -> dict[str, Any]:
    """Start a system of this shape, measure it, tear it down."""
    database_url = create_postgres_database() if config.database == "postgres" else None
    system = BenchSystem(
        home=tmp / config.name,
        database_url=database_url,
        runners=config.runners,
    )
    try:
        with system:
            return asyncio.run(measure_config(system, config))
    finally:
        if database_url is not None:
            drop_postgres_database(database_url)


# --- report ---------------------------------------------------------------------------------


def report(results: list[dict[str, Any]]) -> None:
    """The throughput table, then the cost table."""
    rows = []
    for r in results:
        raw = (r["raw_publish_per_s_before"] + r["raw_publish_per_s_after"]) / 2
        rows.append(
            [
                r["config"],
                f"{r['runs_per_s']:.1f}",
                f"{r['raw_publish_per_s_before']:.0f} / {r['raw_publish_per_s_after']:.0f}",
                ratio(r["runs_per_s"], raw),
                str(r["steady_runs"]),
                f"{r['recorder_drain_s']:.1f}s",
                str(r["failed"]),
            ]
        )
    print("\nthroughput: no-op runs/s at steady state vs raw pipelined JetStream publishes/s")
    print_table(
        [
            "config",
            "runs/s",
            "raw msg/s before / after",
            "ratio",
            "runs in window",
            "drain",
            "failed",
        ],
        rows,
    )
    for r in results:
        if r["query_page_ms"] is not None:
            print(f"\nrecorder page of 50 under load ({r['config']}): {r['query_page_ms'].text()}")
    print("\ncost per run (whole load, until every run was recorded)")
    for r in results:
        cost = r["cost_per_run"]
        stored = ", ".join(f"{k} {v:.2f}" for k, v in sorted(cost["stored_messages"].items()))
        print(f"  {r['config']}:")
        print(f"    stored messages: {stored}")
        print(f"    JetStream API calls: {cost['jetstream_api_calls']:.2f}")
        published = ", ".join(f"{k} {v:.2f}" for k, v in sorted(cost["published_by"].items()))
        delivered = ", ".join(f"{k} {v:.2f}" for k, v in sorted(cost["delivered_to"].items()))
        print(f"    messages published by: {published}")
        print(f"    messages delivered to: {delivered}")
        transactions = cost["database_transactions"]
        print(
            "    database transactions: "
            + (f"{transactions:.2f}" if transactions is not None else "not counted on SQLite")
        )
        cpu = ", ".join(f"{k} {v:.2f}" for k, v in sorted(cost["cpu_ms"].items()))
        total = sum(cost["cpu_ms"].values())
        print(f"    CPU ms: {cpu} (total {total:.2f})")


def main() -> None:
    """Measure every chosen configuration and print the tables."""
    results = []
    with tempfile.TemporaryDirectory(prefix="mainspring-bench-") as tmp:
        for config in chosen_configs():
            print(f"throughput: measuring {config.name} ...", flush=True)
            results.append(run_config(config, Path(tmp)))
    report(results)
    print(f"\nresults: {save_results('throughput', {'configs': results})}")


if __name__ == "__main__":
    main()
