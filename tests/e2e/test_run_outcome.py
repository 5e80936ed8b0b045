"""A run's outcome has one writer: the first terminal RunCompleted settled in the run ledger."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest
from nats.js.api import ConsumerConfig, DeliverPolicy

from mainspring.client import Client
from mainspring.contract import subjects
from mainspring.contract.messages import RunCompleted
from mainspring.contract.queries import RunQuery
from tests.harness import Deployment, eventually, write_routine

pytestmark = pytest.mark.e2e

SLEEPER = """
import time
from mainspring import Routine, on_schedule


class Sleeper(Routine):
    # Fires once in four years: its runs here are started by hand.
    def run(self, event=on_schedule(cron="0 0 29 2 *"), seconds: float = 6.0) -> dict:
        time.sleep(seconds)
        return {"slept": seconds}
"""

ON_FAILURE = """
from mainspring import Routine, on_workflow_failure


class Mourner(Routine):
    def run(self, upstream=on_workflow_failure('sleeper')) -> dict:
        return {"failed_run": upstream.run_id, "status": upstream.status}
"""


async def _status(client: Client, run_id: str, *statuses: str) -> dict[str, Any] | None:
    run = await client.get_run(run_id)
    return run if run is not None and run["status"] in statuses else None


async def _completions_of(client: Client, run_id: str) -> list[RunCompleted]:
    """Every RunCompleted of a run the stream holds, read from its start."""
    js = client.nc.jetstream()
    subscription = await js.pull_subscribe(
        subjects.RUN_COMPLETED_ANY,
        stream=subjects.STREAM,
        config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL),
    )
    found: list[RunCompleted] = []
    try:
        while True:
            try:
                messages = await subscription.fetch(batch=100, timeout=1)
            except TimeoutError:
                return found
            for message in messages:
                completed = RunCompleted.model_validate_json(message.data)
                if completed.run_id == run_id:
                    found.append(completed)
                await message.ack()
    finally:
        await subscription.unsubscribe()


async def test_a_frozen_runner_that_comes_back_cannot_contradict_the_sweep(
    deployment: Deployment, client: Client, tmp_path: Path
) -> None:
    deployment.extra_env.update(
        {
            "MAINSPRING_HEARTBEAT_S": "1",
            "MAINSPRING_STALE_RUN_AFTER_S": "3",
            "MAINSPRING_STALE_SWEEP_EVERY_S": "1",
        }
    )
    # A second runner takes the failure trigger's run while the first one is frozen.
    deployment.start_all(runners=2)
    deployment.cli(
        "routine", "create", str(write_routine(tmp_path / "s", SLEEPER)), "--name", "sleeper"
    )
    deployment.cli(
        "routine", "create", str(write_routine(tmp_path / "m", ON_FAILURE)), "--name", "mourner"
    )
    run_id = await client.submit("sleeper", {"seconds": 6.0})
    running = await eventually(lambda: _status(client, run_id, "running"), 60, what="run started")
    pid = int(running["runner"].rsplit(":", 1)[1])
    runner = next(s for s in deployment.services.values() if s.process and s.process.pid == pid)
    assert runner.process is not None

    runner.process.send_signal(signal.SIGSTOP)
    try:
        failed = await eventually(
            lambda: _status(client, run_id, "failed"), 30, what="stale run failed by the sweep"
        )
        # Frozen mid-flight: the sweep ended the run while its runner still held it.
        assert failed["error"].startswith("no runner heartbeat for 3s")
        mourned = await eventually(
            lambda: _runs_of(client, "mourner", "completed"), 60, what="failure trigger fired"
        )
    finally:
        runner.process.send_signal(signal.SIGCONT)

    # The runner wakes, its routine finished meanwhile, and it reports: it loses to the
    # outcome already settled and republishes that one, never its own.
    await eventually(
        lambda: _logged(runner.log(), "outcome was already settled failed"),
        60,
        what="the resumed runner tried to report its run",
    )
    completions = await _completions_of(client, run_id)
    after = await _status(client, run_id, "failed")

    assert [c.status for c in completions] == ["failed"]
    assert after is not None
    assert after["error"] == failed["error"]
    assert [r["outputs"]["failed_run"] for r in mourned] == [run_id]
    assert len(await client.list_runs(RunQuery(routine="mourner"))) == 1


async def _runs_of(client: Client, routine: str, status: str) -> list[dict[str, Any]] | None:
    runs = await client.list_runs(RunQuery(routine=routine, status=status))
    return runs or None


async def _logged(log: str, text: str) -> bool | None:
    return True if text in log else None
