"""A run cancelled while no runner listened never starts: a runner started later finds the
stored mark, and one that heard the cancel needs no read of the ledger for it."""

from __future__ import annotations

from pathlib import Path

import pytest

from mainspring.client import Client
from mainspring.contract import subjects
from tests.harness import Deployment, eventually, write_routine

pytestmark = pytest.mark.e2e

QUICK = """
from mainspring import Routine, on_schedule


class Quick(Routine):
    def run(self, tick=on_schedule(cron="0 0 29 2 *")) -> dict:
        return {"ok": True}
"""


async def test_a_run_cancelled_before_any_runner_started_ends_cancelled_unstarted(
    deployment: Deployment, client: Client, tmp_path: Path
) -> None:
    deployment.start("recorder")
    deployment.start("dispatcher")
    await client.wait_ready()
    await client.create_routine(write_routine(tmp_path / "quick", QUICK), "quick")
    cancelled = await client.submit("quick")
    await client.dispatched(cancelled, timeout=30)
    deployment.cli("runs", "cancel", cancelled)
    ledger = await client.js.key_value(subjects.LEDGER_BUCKET)

    async def marked() -> bool:
        try:
            await ledger.get(f"cancel.{cancelled}")
        except Exception:  # noqa: BLE001 - not there yet
            return False
        return True

    await eventually(marked, timeout=30, what="the dispatcher's cancel mark")

    deployment.start("runner")
    run = await client.wait(cancelled, timeout=60)
    assert run["status"] == "cancelled"
    assert run["started_at"] is None

    # A run submitted now starts: the marks the runner read are only the cancelled ones.
    other = await client.wait(await client.submit("quick"), timeout=60)
    assert other["status"] == "completed"
