"""nats-server killed within milliseconds of a batch of acks: it forgets them and redelivers run
requests whose runs already ended; none of them runs a second time."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path

import pytest
from nats.aio.msg import Msg

from mainspring.client import Client
from mainspring.contract import subjects
from tests.harness import (
    SHIPPED_NATS_CONFIG,
    Deployment,
    consumer_idle,
    consumer_info,
    deployment_context,
    eventually,
    marking_routine,
    write_routine,
)

pytestmark = [pytest.mark.chaos, pytest.mark.e2e]

RUNS = 20


async def test_runs_whose_acks_the_server_lost_are_not_executed_again(tmp_path: Path) -> None:
    # Acks are lost even with every write fsynced, as shipped.
    with deployment_context(tmp_path, "sqlite", nats_config=SHIPPED_NATS_CONFIG) as system:
        # Requests the restarted server still counts as in flight come back after the ack
        # wait: a short one keeps the test short.
        system.extra_env.update({"MAINSPRING_RUN_ACK_WAIT_S": "3", "MAINSPRING_HEARTBEAT_S": "1"})
        system.start_all()
        client = await Client.connect(system.settings())
        try:
            await _kill_after_acks(system, client, tmp_path)
        finally:
            await client.close()


async def _kill_after_acks(system: Deployment, client: Client, tmp_path: Path) -> None:
    marks = tmp_path / "marks.txt"
    marks.touch()
    await client.create_routine(
        write_routine(
            tmp_path / "mark",
            marking_routine("Mark", 'tick=on_schedule(cron="0 0 29 2 *")', "on_schedule", marks),
        ),
        "mark",
    )
    assert system.nats.process is not None
    server_pid = system.nats.process.pid
    completed: set[str] = set()
    killed_at: list[float] = []

    async def on_completed(message: Msg) -> None:
        completed.add(json.loads(message.data)["run_id"])
        if len(completed) == RUNS and not killed_at:
            # The runner acks right after it publishes the completion: its ack is at most a
            # few milliseconds old, the earlier ones a little older, none flushed yet.
            os.kill(server_pid, signal.SIGKILL)
            killed_at.append(time.monotonic())

    subscription = await client.nc.subscribe(subjects.RUN_COMPLETED_ANY, cb=on_completed)
    run_ids = await asyncio.gather(*(client.submit("mark") for _ in range(RUNS)))
    await eventually(lambda: _true(bool(killed_at)), timeout=90, what=f"{RUNS} completions")
    await subscription.unsubscribe()
    system.nats.kill()  # reaps the killed process
    system.nats.start()

    # The kill must have cost acks, or this proves nothing: the restarted server still counts
    # requests of finished runs as delivered and unacknowledged (they come back after the
    # ack wait).
    info = await eventually(
        lambda: consumer_info(client.js, subjects.RUNNER_CONSUMER), what="the restarted server"
    )
    lost_acks = info.num_ack_pending or 0
    assert lost_acks > 0, "the server kept every ack: kill it sooner after the completions"
    await eventually(
        lambda: consumer_idle(client.js, subjects.RUNNER_CONSUMER),
        timeout=60,
        what="every redelivered request handled",
    )
    runner = system.services["runner-0"].log()
    refused = sum(f"run {r} of mark already ended completed" in runner for r in run_ids)
    print(f"\nacks lost by the kill: {lost_acks} of {RUNS}; refused on redelivery: {refused}")
    ran = marks.read_text().split()
    assert sorted(ran) == sorted(run_ids), "a run executed twice, or not at all"
    for run_id in run_ids:
        assert (await client.wait(run_id, timeout=60))["status"] == "completed"


async def _true(value: bool) -> bool:
    return value
