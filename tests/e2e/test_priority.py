"""A runner with a free slot takes high-priority runs before normal ones before low ones, and
a malformed request among them is parked without holding the others up.

The runner's waiting pulls last a minute here, so while the blocker holds the slot the pulls
left on the high and low queues take the first high and the first low run: those are held in
the runner (kept alive) and the low one is queued behind the higher-priority runs.
"""

from __future__ import annotations

import json
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
    deployment.extra_env["MAINSPRING_INTAKE_POLL_S"] = "60"
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

    connection = await nats.connect(deployment.nats.url)
    try:
        parked = await connection.jetstream().get_last_msg(
            subjects.STREAM, subjects.dead_letter_subject(subjects.RUN_REQUESTED)
        )
    finally:
        await connection.close()
    assert parked.data == b'{"run_id": 7}'

    first_low = next(run_id for run_id, p in submitted if p == "low")
    assert (await queue_reasons(deployment)).get(first_low) == "waiting behind higher-priority runs"
    assert (parked.headers or {})["Mainspring-Error"].startswith(
        "malformed RequestRun on run.requested: "
    )


async def _is(client: Client, run_id: str, wanted: str) -> bool:
    return await status(client, run_id) == wanted


async def queue_reasons(deployment: Deployment) -> dict[str, str]:
    """Every reason published on run.queued, by run id (the first one of each run)."""
    connection = await nats.connect(deployment.nats.url)
    reasons: dict[str, str] = {}
    try:
        subscription = await connection.jetstream().subscribe(
            subjects.RUN_QUEUED, ordered_consumer=True
        )
        while True:
            try:
                message = await subscription.next_msg(timeout=1)
            except TimeoutError:
                return reasons
            body = json.loads(message.data)
            reasons.setdefault(body["run_id"], body["reason"])
    finally:
        await connection.close()
