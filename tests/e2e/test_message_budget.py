"""What one run costs on the bus: a quick manual run stores three messages, not four, writes
one fact to the run ledger (its outcome) and one to the leases bucket (its claim)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from mainspring.client import Client
from mainspring.contract import subjects
from tests.harness import Deployment, write_routine

pytestmark = pytest.mark.e2e

QUICK = """
from mainspring import Routine, on_schedule


class Quick(Routine):
    def run(self, tick=on_schedule(cron="0 0 29 2 *")) -> dict:
        return {"ok": True}
"""

SLOW = """
import time

from mainspring import Routine, on_schedule


class Slow(Routine):
    def run(self, tick=on_schedule(cron="0 0 29 2 *")) -> dict:
        time.sleep(0.5)
        return {"ok": True}
"""


async def stream_messages(client: Client, stream: str = subjects.STREAM) -> int:
    info = await client.js.stream_info(stream)
    return int(info.state.last_seq)


async def test_a_quick_run_stores_submitted_requested_and_completed_only(
    system: Deployment, client: Client, tmp_path: Path
) -> None:
    await client.wait_ready()
    await client.create_routine(write_routine(tmp_path / "quick", QUICK), "quick")
    await client.wait(await client.submit("quick"), timeout=60)  # a warm worker from here on
    before = await stream_messages(client)
    ledger_before = await stream_messages(client, "KV_run_ledger")
    leases_before = await stream_messages(client, f"KV_{subjects.LEASES_BUCKET}")
    runs = 10
    for _ in range(runs):
        run = await client.wait(await client.submit("quick"), timeout=60)
        assert run["status"] == "completed"
        # Who ran it, and which attempt, come with its completion.
        assert run["runner"]
        assert run["attempt"] == 1
        assert run["artifact_location"]
    assert await stream_messages(client) - before == 3 * runs
    # Delivered once and started at once: the attempt is the delivery count, nothing written.
    assert await stream_messages(client, "KV_run_ledger") - ledger_before == runs
    # The claim, left to the bucket's TTL once the run settled (no done mark).
    assert await stream_messages(client, f"KV_{subjects.LEASES_BUCKET}") - leases_before == runs


async def test_a_run_still_going_after_the_delay_is_announced_as_running(
    system: Deployment, client: Client, tmp_path: Path
) -> None:
    await client.wait_ready()
    await client.create_routine(write_routine(tmp_path / "slow", SLOW), "slow")
    run_id = await client.submit("slow")
    seen = set()
    while (run := await client.get_run(run_id)) is None or run["status"] != "completed":
        if run is not None:
            seen.add(run["status"])
        await asyncio.sleep(0.02)
    assert "running" in seen
