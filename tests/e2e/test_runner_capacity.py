"""Runners register what they offer; a run no runner can hold is refused when it is asked for."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from mainspring.client import Client
from mainspring.contract import subjects
from mainspring.runtime.bus import set_up_now
from mainspring.storage.capacity import RunnerCapacity
from tests.harness import Deployment, consumer_idle, eventually, write_routine

pytestmark = pytest.mark.e2e

# Short, so a killed runner's entry expires within the test; refreshed every second.
TTL_S = 6.0

ROUTINE = """
from mainspring import Routine, on_schedule


class Sized(Routine):
    def run(self, event=on_schedule(cron='0 0 29 2 *')) -> dict:
        return {"ran": True}
"""


def with_short_ttl(deployment: Deployment) -> None:
    """Declare the runners bucket with a short TTL and give every service the same setting."""
    deployment.extra_env.update(
        {"MAINSPRING_RUNNER_CAPACITY_TTL_S": str(TTL_S), "MAINSPRING_HEARTBEAT_S": "1"}
    )
    set_up_now(deployment.settings().model_copy(update={"runner_capacity_ttl_s": TTL_S}))


async def live_runners(client: Client, count: int) -> list[RunnerCapacity]:
    found = await client.runners()
    assert len(found) == count, found
    return found


async def no_runners(client: Client) -> bool:
    found = await client.runners()
    assert found == [], found
    return True


async def test_a_runner_registers_and_a_run_larger_than_every_runner_is_refused_at_submit(
    deployment: Deployment, client: Client, tmp_path: Path
) -> None:
    with_short_ttl(deployment)
    deployment.start_all(runners=1)
    (runner,) = await eventually(
        lambda: live_runners(client, 1), 60, what="the runner's capacity entry"
    )
    assert runner.instance.startswith("runner@")
    assert runner.slots == 2
    assert runner.busy == 0
    assert 0 < runner.memory_available <= runner.memory_total
    assert runner.isolation == ["worker", "process"]

    described = json.loads(deployment.cli("status", "--json", check=False).stdout)
    (row,) = described["runners"]
    assert (row["instance"], row["host"], row["slots"]) == (runner.instance, runner.host, 2)
    assert row["memory_total"] == runner.memory_total
    assert row["refreshed_s"] < TTL_S
    table = deployment.cli("status", check=False).stdout
    assert runner.instance in table
    assert "0/2" in table

    deployment.cli(
        "routine", "create", str(write_routine(tmp_path / "sized", ROUTINE)), "--name", "sized"
    )
    # Within the largest runner's memory: requested and run as before.
    fits = deployment.cli("run", "sized", "--memory", "1MiB", "--wait", "--timeout", "60")
    assert "status: completed" in fits.stdout

    total_mib = runner.memory_total // 2**20
    asked_mib = total_mib + 1024
    refused = deployment.cli("run", "sized", "--memory", f"{asked_mib}MiB", check=False)

    reason = (
        f"no runner has that much memory: sized asks for {asked_mib} MiB, the largest runner "
        f"has {total_mib} MiB; lower the routine's memory or start a runner with more"
    )
    assert refused.returncode != 0
    assert reason in refused.stderr
    (run,) = [
        r for r in await client.list_runs() if r["status"] == "failed" and r["routine"] == "sized"
    ]
    assert run["error"] == reason
    assert run["queued_at"] is None
    assert run["started_at"] is None
    # Nothing went to the runners: their queue holds no request.
    assert await consumer_idle(client.js, subjects.RUNNER_CONSUMER)


async def a_run_waiting_for_memory_names_the_runner_with_the_most(
    client: Client, tmp_path: Path, runner: RunnerCapacity
) -> None:
    """A run asking for a runner's whole memory fits no runner's available memory (the kernel
    keeps some), yet is not refused: it waits, and says which runner has the most free."""
    folder = write_routine(tmp_path / "whole", ROUTINE)
    await client.create_routine(folder, name="whole")
    run_id = await client.submit("whole", memory_limit=runner.memory_total)
    needed = f"needs {runner.memory_total // 2**20} MiB"

    async def held() -> dict[str, object]:
        run = await client.get_run(run_id)
        assert run is not None
        reason = str(run["queue_reason"])
        assert reason.startswith(
            f"no runner has that much memory available now: {needed}, the most available is "
        ), reason
        assert reason.endswith(f" MiB on {runner.host}"), reason
        return run

    await eventually(held, 30, what="the memory hold's reason")
    await client.cancel(run_id)
    ended = await client.wait(run_id, timeout=30)
    assert ended["status"] == "cancelled"


async def test_a_drained_runner_deletes_its_entry_and_a_killed_ones_expires(
    deployment: Deployment, client: Client, tmp_path: Path
) -> None:
    with_short_ttl(deployment)
    deployment.start_all(runners=2)
    first, second = await eventually(
        lambda: live_runners(client, 2), 60, what="both runners' entries"
    )
    await a_run_waiting_for_memory_names_the_runner_with_the_most(client, tmp_path, first)

    drained = deployment.services["runner-0"]
    assert drained.process is not None
    drained_name = next(
        r.instance for r in (first, second) if r.instance.endswith(f":{drained.process.pid}")
    )

    # SIGTERM drains: the entry goes at once. Refreshed at most a second before, it would
    # expire only TTL_S - 1 seconds after the signal, so finding it gone sooner proves the
    # delete.
    drained.process.send_signal(signal.SIGTERM)
    (left,) = await eventually(
        lambda: live_runners(client, 1), TTL_S / 2, what="the drained runner's entry deleted"
    )
    assert left.instance != drained_name
    drained.kill(signal.SIGTERM)

    # SIGKILL: nothing deletes the entry; the bucket's TTL does.
    killed = deployment.services["runner-1"]
    killed.kill(signal.SIGKILL)
    assert [r.instance for r in await client.runners()] == [left.instance]
    await eventually(
        lambda: no_runners(client), TTL_S + 10, what="the killed runner's entry expired"
    )

    # No runner live: a run of any size is requested and waits for one (the dispatcher's copy
    # forgot the killed runner too, though no watch is told of an expiry).
    deployment.cli(
        "routine", "create", str(write_routine(tmp_path / "sized", ROUTINE)), "--name", "sized"
    )
    waiting = deployment.cli("run", "sized", "--memory", "1000GiB").stdout.strip()
    run = await client.dispatched(waiting)
    assert run["status"] == "queued"
