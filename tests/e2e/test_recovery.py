"""Nothing lost: runs survive a SIGKILLed recorder and a SIGKILLed nats-server."""

from __future__ import annotations

import functools
import json
import signal
from pathlib import Path

import pytest

from mainspring.client import Client
from mainspring.contract import subjects
from mainspring.contract.queries import RunQuery
from tests.harness import Deployment, consumer_idle, consumer_info, copy_example, eventually

pytestmark = pytest.mark.e2e


async def test_runs_finished_while_the_recorder_was_dead_are_recorded(
    system: Deployment, client: Client, tmp_path: Path
) -> None:
    await client.create_routine(copy_example("hello", tmp_path), "hello")
    first = await client.submit("hello", {"steps": 1})
    await client.wait(first, timeout=60)

    system.services["recorder"].kill(signal.SIGKILL)
    completed = await client.nc.subscribe(subjects.RUN_COMPLETED_ANY)
    submitted = [await client.submit("hello", {"steps": 1, "name": f"n{i}"}) for i in range(5)]
    finished: set[str] = set()
    while not set(submitted) <= finished:
        message = await completed.next_msg(timeout=60)
        finished.add(json.loads(message.data)["run_id"])
    # The kill landed before these runs: every event of theirs waits on the stream for the
    # recorder, at least their five completions.
    waiting = await consumer_info(client.js, "recorder-runs")
    assert (waiting.num_pending or 0) + (waiting.num_ack_pending or 0) >= len(submitted)
    system.start("recorder")

    async def all_recorded() -> bool:
        runs = await client.list_runs(RunQuery(routine="hello", source="api", limit=100))
        return {r["id"] for r in runs if r["status"] == "completed"} >= {first, *submitted}

    await eventually(all_recorded, timeout=60, what="every run recorded after the recorder restart")
    runs = await client.list_runs(RunQuery(routine="hello", source="api", limit=100))
    assert len(runs) == 6
    assert len({r["run_number"] for r in runs}) == 6


async def test_system_recovers_from_a_killed_nats_server(
    system: Deployment, client: Client, tmp_path: Path
) -> None:
    system.cli("routine", "create", str(copy_example("hello", tmp_path)), "--name", "hello")
    before = system.cli("run", "hello", "--input", "steps=1", "--wait", "--timeout", "60")
    assert "status: completed" in before.stdout

    # Thirty steps of 0.1s: the run is in a runner's hands while the server dies under it.
    in_flight = await client.submit("hello", {"steps": 30})
    await eventually(functools.partial(_running, client, in_flight), timeout=60, what="running")
    system.nats.kill(signal.SIGKILL)
    system.nats.start()

    finished = await client.wait(in_flight, timeout=120)
    assert finished["status"] == "completed", system.logs()
    after = system.cli(
        "run", "hello", "--input", "steps=1", "--wait", "--timeout", "90", timeout=120
    )
    assert "status: completed" in after.stdout, system.logs()
    listed = system.cli(
        "runs", "list", "--routine", "hello", "--status", "completed", "--source", "manual"
    )
    assert listed.stdout.count("hello") == 2
    assert all(service.alive() for service in system.services.values())


async def _running(client: Client, run_id: str) -> bool:
    run = await client.get_run(run_id)
    return run is not None and run["status"] == "running"


FENCED = """
from pathlib import Path

from mainspring import Routine, on_schedule


class Once(Routine):
    def run(self, tick=on_schedule(cron="0 0 29 2 *"), marker: str = "") -> dict:
        with Path(marker).open("a") as out:
            out.write("ran\\n")
        return {}
"""


async def test_a_first_delivery_of_a_request_whose_run_ended_does_not_run_it_twice(
    system: Deployment, client: Client, tmp_path: Path
) -> None:
    folder = tmp_path / "once"
    folder.mkdir()
    (folder / "routine.py").write_text(FENCED)
    marker = tmp_path / "ran.txt"
    await client.create_routine(folder, "once")
    run_id = await client.submit("once", {"marker": str(marker)})
    assert (await client.wait(run_id, timeout=60))["status"] == "completed"

    # The same request again under another message id, delivered for the first time: what
    # the dispatcher's fence cannot see (a server that lost its consumer state hands a
    # request out again as a first delivery; a completion published again past the
    # duplicate window requests its downstream run again). A dispatcher's own redelivery
    # past the window publishes nothing: tests/e2e/test_beyond_the_window.py.
    request = await client.js.get_last_msg(subjects.STREAM, subjects.RUN_REQUESTED)
    await client.js.publish(
        subjects.RUN_REQUESTED,
        request.data or b"",
        stream=subjects.STREAM,
        headers={"Nats-Msg-Id": f"again:{run_id}"},
    )
    runner = system.services["runner-0"]

    async def refused() -> bool:
        return f"run {run_id} of once already ended completed: not run again" in runner.log()

    await eventually(refused, timeout=30, what="the runner to refuse the second copy")
    assert marker.read_text() == "ran\n"
    assert (await client.get_run(run_id) or {})["status"] == "completed"


SLOW_MARK = """
import time
from pathlib import Path

from mainspring import Routine, on_schedule


class SlowOnce(Routine):
    def run(self, tick=on_schedule(cron="0 0 29 2 *"), marker: str = "") -> dict:
        with Path(marker).open("a") as out:
            out.write("ran\\n")
        time.sleep(3)
        return {}
"""


async def test_a_second_copy_of_a_request_while_its_run_is_running_does_not_run_it_again(
    deployment: Deployment, client: Client, tmp_path: Path
) -> None:
    deployment.extra_env.update({"MAINSPRING_RUN_ACK_WAIT_S": "3", "MAINSPRING_HEARTBEAT_S": "1"})
    deployment.start_all(runners=2)
    folder = tmp_path / "slow"
    folder.mkdir()
    (folder / "routine.py").write_text(SLOW_MARK)
    marker = tmp_path / "ran.txt"
    await client.create_routine(folder, "slow")
    run_id = await client.submit("slow", {"marker": str(marker)})
    await eventually(functools.partial(_running, client, run_id), timeout=60, what="running")

    # What a redelivery to the other runner looks like while the first one still runs it
    # (its ack wait passed while it was cut off from the bus): nothing is settled yet.
    request = await client.js.get_last_msg(subjects.STREAM, subjects.RUN_REQUESTED)
    await client.js.publish(
        subjects.RUN_REQUESTED,
        request.data or b"",
        stream=subjects.STREAM,
        headers={"Nats-Msg-Id": f"copy:{run_id}"},
    )

    assert (await client.wait(run_id, timeout=60))["status"] == "completed"
    await eventually(
        functools.partial(consumer_idle, client.js, subjects.RUNNER_CONSUMER),
        timeout=30,
        what="the copy handled",
    )
    assert marker.read_text() == "ran\n", deployment.logs()
