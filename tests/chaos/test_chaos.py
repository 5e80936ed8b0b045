"""Mixed triggers while every service and nats-server are killed and paused at random: every
accepted trigger runs exactly once, every run ends, and the database matches what ran.

Sized by environment variables (the defaults are the bounded CI form, about 70 s):
MAINSPRING_CHAOS_SECONDS (load time), MAINSPRING_CHAOS_MIN_TRIGGERS (load goes on until this
many triggers were accepted, up to MAINSPRING_CHAOS_MAX_SECONDS), MAINSPRING_CHAOS_FAULT_EVERY_S,
MAINSPRING_CHAOS_SEED. `just chaos` runs the long form.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import random
import signal
import sqlite3
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from deltalake import write_deltalake

from mainspring.client import Client
from mainspring.storage import datasets
from tests.chaos.routines import routine_folder
from tests.chaos.tally import TERMINAL, read_executions, tally
from tests.harness import SHIPPED_NATS_CONFIG, Deployment, deployment_context, eventually

CHAOS_SECONDS = float(os.environ.get("MAINSPRING_CHAOS_SECONDS", "55"))
MIN_TRIGGERS = int(os.environ.get("MAINSPRING_CHAOS_MIN_TRIGGERS", "0"))
MAX_SECONDS = float(os.environ.get("MAINSPRING_CHAOS_MAX_SECONDS", str(CHAOS_SECONDS)))
FAULT_EVERY_S = float(os.environ.get("MAINSPRING_CHAOS_FAULT_EVERY_S", "3.5"))
SEED = int(os.environ.get("MAINSPRING_CHAOS_SEED", str(int(time.time()))))
SUBMITS_PER_S = 3.0
ROWS_PER_APPEND = 3

# The runner's consumer gets a short ack wait so a pause outlives it inside the bounded form;
# every other durable keeps the 30 s of service.durable(), so their pauses last 31 s.
RUN_ACK_WAIT_S = 5.0
OTHER_ACK_WAIT_S = 30.0

pytestmark = [
    pytest.mark.chaos,
    pytest.mark.e2e,
    pytest.mark.timeout(int(max(MAX_SECONDS, CHAOS_SECONDS)) + 300),
]

SERVICES = (
    "recorder",
    "dispatcher-0",
    "dispatcher-1",
    "ticker",
    "dataset_watcher",
    "runner-0",
    "runner-1",
)


@dataclass
class Chaos:
    """The faults dealt so far, and what is frozen right now."""

    deployment: Deployment
    rng: random.Random
    kills: dict[str, int] = field(default_factory=dict)
    pauses: dict[str, int] = field(default_factory=dict)
    paused: set[str] = field(default_factory=set)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def kill(self, target: str) -> None:
        """SIGKILL one service, or nats-server, and start it again (same store, same port)."""
        self.kills[target] = self.kills.get(target, 0) + 1
        if target == "nats":
            self.deployment.nats.kill(signal.SIGKILL)
            await asyncio.sleep(self.rng.uniform(0.0, 0.5))
            await asyncio.to_thread(self.deployment.nats.start)
            return
        service = self.deployment.services[target]
        service.kill(signal.SIGKILL)
        await asyncio.sleep(self.rng.uniform(0.1, 1.0))
        service.start()

    def pause(self, target: str) -> None:
        """SIGSTOP a service for longer than its consumers' ack wait, then SIGCONT it."""
        self.pauses[target] = self.pauses.get(target, 0) + 1
        self.paused.add(target)
        seconds = (RUN_ACK_WAIT_S if target.startswith("runner") else OTHER_ACK_WAIT_S) + 1.0
        process = self.deployment.services[target].process
        assert process is not None
        process.send_signal(signal.SIGSTOP)

        async def resume() -> None:
            try:
                await asyncio.sleep(seconds)
            finally:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGCONT)
                self.paused.discard(target)

        task = asyncio.create_task(resume())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def deal(self, until: float) -> None:
        """Faults every few seconds until `until`: first each target once, then at random.

        One long pause (past a 30 s ack wait) comes first, so it ends inside the load.
        """
        long_pause = self.rng.choice([s for s in SERVICES if not s.startswith("runner")])
        if until - time.monotonic() > OTHER_ACK_WAIT_S + 5:
            self.pause(long_pause)
        targets = [*SERVICES, "nats"]
        self.rng.shuffle(targets)
        while time.monotonic() < until:
            await asyncio.sleep(self.rng.uniform(0.5, 1.5) * FAULT_EVERY_S)
            target = targets.pop() if targets else self.rng.choice([*SERVICES, "nats"])
            # A paused target may be killed too: a frozen process dies like any other.
            # The first runner hit is paused past its ack wait, a third of later ones too.
            first = not any(p.startswith("runner") for p in self.pauses)
            if target.startswith("runner") and (first or self.rng.random() < 1 / 3):
                self.pause(target)
            else:
                await self.kill(target)

    async def calm(self) -> None:
        """Resume every paused service and make sure all of them run."""
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for label, service in self.deployment.services.items():
            if not service.alive():
                self.deployment.services[label].start()


@dataclass
class Load:
    """Triggers sent: manual submits (acknowledged or not) and appends committed."""

    submitted: set[str] = field(default_factory=set)
    unacknowledged: set[str] = field(default_factory=set)
    rows: set[str] = field(default_factory=set)
    appends: int = 0
    sent: int = 0

    async def submit(self, client: Client, until: float, rng: random.Random) -> None:
        """Manual runs, each with its own key; accepted once the stream acknowledged it."""
        while time.monotonic() < until:
            self.sent += 1
            key = f"m{self.sent}"
            try:
                await asyncio.wait_for(client.submit("manual", {"key": key}), timeout=5)
            except Exception:  # noqa: BLE001 - not acknowledged: may run, but at most once
                self.unacknowledged.add(key)
            else:
                self.submitted.add(key)
            await asyncio.sleep(rng.expovariate(SUBMITS_PER_S))

    async def append(self, uri: str, until: float) -> None:
        """An outside writer: deltalake appends, a few rows each, every second."""
        while time.monotonic() < until:
            first = self.appends * ROWS_PER_APPEND
            values = list(range(first, first + ROWS_PER_APPEND))
            table = pa.table({"id": pa.array(values, pa.int64())})
            await asyncio.to_thread(write_deltalake, uri, table, mode="append")
            self.rows |= {str(v) for v in values}
            self.appends += 1
            await asyncio.sleep(1.0)


def recorded_runs(database: Path) -> list[dict[str, Any]]:
    """Every run in the recorder's SQLite database, read directly."""
    with contextlib.closing(sqlite3.connect(database)) as db:
        db.row_factory = sqlite3.Row
        rows = db.execute(
            "SELECT id, routine, status, outputs, trigger_event, parent_run_id FROM runs"
        ).fetchall()
    return [
        {
            **dict(row),
            "outputs": json.loads(row["outputs"]) if row["outputs"] else None,
            "trigger_event": json.loads(row["trigger_event"]) if row["trigger_event"] else None,
        }
        for row in rows
    ]


def window_ticks(start: float, end: float) -> set[str]:
    """The whole seconds of the `every="1s"` grid in [start, end], as the routine writes them."""
    return {
        datetime.fromtimestamp(second, UTC).isoformat()
        for second in range(math.ceil(start), math.floor(end) + 1)
    }


def enough(load: Load, started: float) -> bool:
    """Has the load reached the minimum number of triggers (ticks counted by the clock)?"""
    ticks = time.monotonic() - started
    return len(load.submitted) * 2 + len(load.rows) // ROWS_PER_APPEND + ticks >= MIN_TRIGGERS


async def test_every_accepted_trigger_runs_exactly_once_under_kills_and_pauses(
    tmp_path: Path,
) -> None:
    rng = random.Random(SEED)
    # The server as shipped: nats-server's default flushes writes after acknowledging them.
    with deployment_context(tmp_path, "sqlite", nats_config=SHIPPED_NATS_CONFIG) as deployment:
        deployment.extra_env.update(
            {"MAINSPRING_RUN_ACK_WAIT_S": str(RUN_ACK_WAIT_S), "MAINSPRING_HEARTBEAT_S": "1"}
        )
        for label in SERVICES:
            deployment.start(label.split("-")[0], label)
        client = await Client.connect(deployment.settings())
        try:
            await _chaos_run(deployment, client, tmp_path, rng)
        finally:
            await client.close()


async def _chaos_run(
    deployment: Deployment, client: Client, tmp_path: Path, rng: random.Random
) -> None:
    effects = tmp_path / "effects.jsonl"
    effects.touch()
    root = str(deployment.home / "datasets")
    datasets.create("events", "id:int64", root=root)
    for name in ("after", "manual", "rows", "tick"):
        await client.create_routine(routine_folder(tmp_path, name, effects), name)
    # The ticker learns of the routine through its registry watch: ticks from here on are due.
    window_start = time.time() + 3.0

    chaos = Chaos(deployment, rng)
    load = Load()
    began = time.monotonic()
    until = began + CHAOS_SECONDS
    submitting = asyncio.create_task(load.submit(client, until, rng))
    appending = asyncio.create_task(load.append(f"{root}/events", until))
    await chaos.deal(until)
    while not enough(load, began) and time.monotonic() < began + MAX_SECONDS:
        # Long enough for each round to open with another pause past a 30 s ack wait.
        until = time.monotonic() + OTHER_ACK_WAIT_S + 10
        submitting = asyncio.create_task(load.submit(client, until, rng))
        appending = asyncio.create_task(load.append(f"{root}/events", until))
        await chaos.deal(until)
    await asyncio.gather(submitting, appending)
    await chaos.calm()

    # Every tick due while the routine was enabled must run, those the ticker missed while
    # down included (catch-up "all"): the window ends at a tick that ran after the calm.
    calm_at = time.time()
    await eventually(
        lambda: _ran_tick_after(effects, calm_at), timeout=60, what="the ticker catching up"
    )
    window_end = calm_at
    deployment.cli("routine", "disable", "tick")

    accepted = {
        "tick": window_ticks(window_start, window_end),
        "manual": load.submitted,
        "append": load.rows,
    }
    database = deployment.home / "runs.db"

    async def settled() -> bool:
        runs = recorded_runs(database)
        completed_manual = {
            r["id"] for r in runs if r["routine"] == "manual" and r["status"] == "completed"
        }
        accepted["completion"] = completed_manual
        result = tally(accepted, _executions(effects), runs)
        return not result.lost_count and not result.not_terminal and not result.mismatched

    with contextlib.suppress(AssertionError):
        await eventually(settled, timeout=60, interval=1.0, what="every run settled")
    runs = recorded_runs(database)
    accepted["completion"] = {
        r["id"] for r in runs if r["routine"] == "manual" and r["status"] == "completed"
    }
    result = tally(accepted, _executions(effects), runs)
    faults = (
        f"seed {SEED}; kills: {sum(chaos.kills.values())} {chaos.kills}; "
        f"pauses: {sum(chaos.pauses.values())} {chaos.pauses}; "
        f"appends committed: {load.appends}; submits not acknowledged: {len(load.unacknowledged)}"
    )
    print(f"\nchaos: {faults}\n{result.summary()}")
    assert set(chaos.kills) | set(chaos.pauses) == {*SERVICES, "nats"}, (
        f"not every part was hit; make MAINSPRING_CHAOS_SECONDS longer: {chaos.kills}"
    )
    assert not result.not_terminal, result.summary()
    assert not result.lost_count, result.summary() + "\n" + deployment.logs()
    assert not result.doubled_count, result.summary() + _evidence(
        deployment, effects, result.reexecuted
    )
    assert not result.mismatched, result.summary()
    assert all(r["status"] in TERMINAL for r in runs)
    assert result.triggers >= MIN_TRIGGERS


def _evidence(deployment: Deployment, effects: Path, run_ids: list[str]) -> str:
    """Each re-executed run's executions and every service log line naming it."""
    lines = effects.read_text().splitlines()
    found = []
    for run_id in run_ids[:5]:
        found.append(f"\n== {run_id}")
        found += [line for line in lines if run_id in line]
        for path in sorted((deployment.home / "logs").glob("*.log")):
            found += [
                f"{path.stem}: {line}"
                for line in path.read_text(errors="replace").splitlines()
                if run_id in line
            ]
    return "\n".join(found)


def _executions(effects: Path) -> list[Any]:
    return read_executions(effects.read_text().splitlines())


async def _ran_tick_after(effects: Path, moment: float) -> bool:
    ticks = [e for e in _executions(effects) if e.kind == "tick"]
    return any(datetime.fromisoformat(e.keys[0]).timestamp() >= moment for e in ticks)
