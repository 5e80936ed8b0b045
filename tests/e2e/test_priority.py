"""A runner with a free slot takes high-priority runs before normal ones before low ones, and
a malformed request among them is parked without holding the others up."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Any

import nats
import pytest

from mainspring.client import Client
from mainspring.contract import subjects
from tests.harness import Deployment, eventually, write_routine

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

GATED = """
import time
from pathlib import Path

from mainspring import Routine, on_schedule


class Gated(Routine):
    def run(self, tick=on_schedule(cron="0 0 29 2 *"), gate: str = "", seconds: float = 0.05) -> dict:
        # The first run holds the only slot until the test opens the gate.
        deadline = time.monotonic() + 60
        while gate and not Path(gate).exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(seconds)
        return {}
"""


async def status(client: Client, run_id: str) -> str | None:
    run = await client.get_run(run_id)
    return None if run is None else str(run["status"])


async def test_runs_start_high_then_normal_then_low_once_the_slot_frees(
    deployment: Deployment, client: Client, tmp_path: Path
) -> None:
    deployment.extra_env["MAINSPRING_RUNNER_SLOTS"] = "1"
    deployment.start_all()
    await client.wait_ready()
    await client.create_routine(write_routine(tmp_path / "gated", GATED), "gated")
    gate = tmp_path / "gate"
    blocker = await client.submit("gated", {"gate": str(gate)})
    await eventually(
        lambda: _is(client, blocker, "running"), timeout=60, what="the blocker running"
    )

    submitted: list[tuple[str, str]] = []
    order = ["low", "normal", "high", "low", "normal", "high", "low", "normal"]
    for index, priority in enumerate(order):
        run_id = await client.submit("gated", priority=priority)
        await client.dispatched(run_id)
        submitted.append((run_id, priority))
        if index == 3:
            # Pulled with the others, parked on its own: the runs around it still run.
            connection = await nats.connect(deployment.nats.url)
            try:
                await connection.jetstream().publish(
                    subjects.RUN_REQUESTED, b'{"run_id": 7}', stream=subjects.STREAM
                )
            finally:
                await connection.close()
    assert await status(client, blocker) == "running"

    gate.touch()
    runs: list[dict[str, Any]] = []
    for run_id, _ in submitted:
        run = await client.wait(run_id, timeout=60)
        assert run["status"] == "completed", run
        runs.append(run)

    started = sorted(
        zip(runs, [p for _, p in submitted], strict=True),
        key=lambda pair: datetime.fromisoformat(str(pair[0]["started_at"])),
    )
    assert [priority for _, priority in started] == [
        "high",
        "high",
        "normal",
        "normal",
        "normal",
        "low",
        "low",
        "low",
    ]
    # Within a priority, in the order they were asked for.
    for priority in ("high", "normal", "low"):
        asked = [run_id for run_id, p in submitted if p == priority]
        assert [run["id"] for run, p in started if p == priority] == asked
    # Every run started once, on its first delivery.
    assert all(run["attempt"] == 1 for run in runs)
    # Each run's record says the priority it was taken at.
    assert [run["priority"] for run in runs] == [p for _, p in submitted]

    connection = await nats.connect(deployment.nats.url)
    try:
        parked = await connection.jetstream().get_last_msg(
            subjects.STREAM, subjects.dead_letter_subject(subjects.RUN_REQUESTED)
        )
    finally:
        await connection.close()
    assert parked.data == b'{"run_id": 7}'
    assert (parked.headers or {})["Mainspring-Error"].startswith(
        "malformed RequestRun on run.requested: "
    )


async def _is(client: Client, run_id: str, wanted: str) -> bool:
    return await status(client, run_id) == wanted


async def test_a_busy_runner_leaves_new_runs_to_a_runner_with_a_free_slot(
    deployment: Deployment, client: Client, tmp_path: Path
) -> None:
    """Runner A waits on the server first, so its pulls are older than B's and the server
    would hand A the next request; once A's only slot is busy it withdraws them, and a high
    run submitted then starts on B at once instead of waiting behind A's long run."""
    deployment.extra_env["MAINSPRING_RUNNER_SLOTS"] = "1"
    deployment.extra_env["MAINSPRING_INTAKE_POLL_S"] = "60"
    for name in ("recorder", "dispatcher"):
        deployment.start(name)
    first = deployment.start("runner", "runner-a")
    await client.wait_ready()
    await client.create_routine(write_routine(tmp_path / "gated", GATED), "gated")
    gate = tmp_path / "gate"
    blocker = await client.submit("gated", {"gate": str(gate)})
    running = await eventually(
        lambda: _running(client, blocker), timeout=60, what="the blocker running on runner A"
    )
    assert first.process is not None
    assert running["runner"].endswith(f":{first.process.pid}")
    second = deployment.start("runner", "runner-b")

    urgent = await client.submit("gated", priority="high")
    finished = await client.wait(urgent, timeout=30)

    assert finished["status"] == "completed"
    assert second.process is not None
    assert finished["runner"].endswith(f":{second.process.pid}")
    assert await status(client, blocker) == "running"
    gate.touch()
    assert (await client.wait(blocker, timeout=60))["status"] == "completed"


async def _running(client: Client, run_id: str) -> dict[str, Any] | None:
    run = await client.get_run(run_id)
    return run if run is not None and run["status"] == "running" else None


async def test_an_idle_runner_starts_each_run_at_once(
    system: Deployment, client: Client, tmp_path: Path
) -> None:
    """Run after run on an idle runner: each request is taken by the pull waiting on the
    server when it is stored, not by a later round (a lost pull shows as seconds per run)."""
    await client.wait_ready()
    await client.create_routine(write_routine(tmp_path / "gated", GATED), "gated")
    await client.wait(await client.submit("gated"), timeout=60)  # a warm worker from here on
    started = time.monotonic()
    for _ in range(20):
        run = await client.wait(await client.submit("gated", {"seconds": 0.0}), timeout=60)
        assert run["status"] == "completed"
    assert time.monotonic() - started < 20, "20 quick runs, one after the other, took too long"
