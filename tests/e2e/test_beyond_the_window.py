"""A dispatcher that dies between a run request and its commit, and stays down longer than the
stream's duplicate window, still requests the run once: the stream holds one request for it
and the routine runs once. Appends (the cursor write is the commit), submitted runs and
completion-triggered runs (the ack is).

The stream's window is a second here; the dispatcher is stopped at the exact point by
MAINSPRING_DIE_AFTER_REQUEST (it ends itself right after publishing a request, before its
cursor write or its ack), and its trigger message comes back to the restarted dispatcher
after the consumer's ack wait, long past the window.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from mainspring.client import Client
from mainspring.contract import subjects
from mainspring.contract.messages import DatasetAppended
from mainspring.contract.queries import RunQuery
from mainspring.runtime.bus import publish, set_up_now
from mainspring.storage import datasets
from tests.harness import (
    Deployment,
    ServiceProcess,
    consumer_idle,
    deployment_context,
    eventually,
    marking_routine,
    write_routine,
)

pytestmark = pytest.mark.e2e

WINDOW_S = 1.0
DIE_AFTER_REQUEST = "MAINSPRING_DIE_AFTER_REQUEST"
SCHEMA = "id:int64,text:string"

UPSTREAM = """
import time
from mainspring import Routine, on_schedule


class Up(Routine):
    def run(self, tick=on_schedule(cron="0 0 29 2 *")) -> dict:
        time.sleep(1)
        return {}
"""


class Outage:
    """A deployment with a one-second duplicate window and a dispatcher that can be made to
    die right after its next request."""

    def __init__(self, deployment: Deployment, client: Client, tmp_path: Path) -> None:
        self.deployment = deployment
        self.client = client
        self.die = tmp_path / "die-after-request"
        self.ran = tmp_path / "ran.txt"
        self.ran.touch()

    def start_dispatcher(self) -> ServiceProcess:
        return self.deployment.start("dispatcher", env={DIE_AFTER_REQUEST: str(self.die)})

    def start_services(self) -> None:
        """A recorder, a runner and the dispatcher that can be made to die."""
        self.deployment.start("recorder")
        self.deployment.start("runner", "runner-0")
        self.start_dispatcher()

    async def requests_stored(self) -> int:
        """How many run requests the stream holds (under any message id)."""
        info = await self.client.js.stream_info(
            subjects.STREAM, subjects_filter=subjects.RUN_REQUESTED
        )
        return (info.state.subjects or {}).get(subjects.RUN_REQUESTED, 0)

    async def die_after_the_request(self, trigger: Any) -> dict[str, Any]:
        """Arm the dispatcher, send the trigger, see it die with its request stored; returns
        the stored request."""
        before = await self.requests_stored()
        self.die.touch()
        await trigger()
        dispatcher = self.deployment.services["dispatcher"]

        async def died() -> bool:
            return not dispatcher.alive()

        await eventually(died, timeout=60, what="the dispatcher to die after the request")
        assert not self.die.exists()
        assert "dying after a request, before its commit" in dispatcher.log()
        assert await self.requests_stored() == before + 1
        stored = await self.client.js.get_last_msg(subjects.STREAM, subjects.RUN_REQUESTED)
        return dict(json.loads(stored.data or b"{}"))

    async def restart_beyond_the_window(self, consumer: str, run_id: str) -> None:
        """Let the window pass, restart the dispatcher, wait for the redelivered trigger."""
        await self.client.wait(run_id, timeout=60)
        stored = await self.client.js.get_last_msg(subjects.STREAM, subjects.RUN_REQUESTED)
        assert stored.time is not None
        # Nothing to await: the window is time passing on the server's clock.
        await asyncio.sleep(max(0.0, WINDOW_S + 0.5 - _age(stored.time)))
        assert _age(stored.time) > WINDOW_S
        self.start_dispatcher()
        await eventually(
            lambda: consumer_idle(self.client.js, consumer),
            timeout=90,
            what="the redelivered trigger handled and acked",
        )

    async def assert_once(self, routine: str, run_id: str, requests: int = 1) -> None:
        assert await self.requests_stored() == requests, "the request was published again"
        fenced = f"run {run_id} of {routine} was requested before this redelivery: not again"
        assert fenced in self.deployment.services["dispatcher"].log()
        assert self.ran.read_text().split() == [run_id], "the routine ran twice, or not at all"
        runs = await self.client.list_runs(RunQuery(routine=routine, limit=10))
        assert [(r["id"], r["status"]) for r in runs] == [(run_id, "completed")]


def _age(stored: datetime) -> float:
    return time.time() - stored.astimezone(UTC).timestamp()


@pytest.fixture
async def outage(tmp_path: Path) -> AsyncIterator[Outage]:
    with deployment_context(tmp_path, "sqlite", set_up=False) as deployment:
        deployment.extra_env["MAINSPRING_DUPLICATE_WINDOW_S"] = str(WINDOW_S)
        settings = deployment.settings().model_copy(update={"duplicate_window_s": WINDOW_S})
        set_up_now(settings)
        client = await Client.connect(settings)
        try:
            yield Outage(deployment, client, tmp_path)
        finally:
            await client.close()


async def test_an_append_whose_cursor_write_was_lost_past_the_window_runs_once(
    outage: Outage, tmp_path: Path
) -> None:
    system = outage.deployment
    outage.start_services()
    root = str(system.home / "datasets")
    datasets.create("events", SCHEMA, root=root)
    folder = write_routine(
        tmp_path / "collect",
        marking_routine(
            "Collect",
            'new_rows=on_dataset_append("events")',
            "on_dataset_append",
            outage.ran,
            result='{"added": new_rows.added_records}',
        ),
    )
    await outage.client.create_routine(folder, "collect")
    version = datasets.append("events", {"id": [1, 2, 3], "text": ["a", "b", "c"]}, root=root)
    appended = DatasetAppended(
        dataset="events", from_version=version - 1, to_version=version, added_records=3
    )

    request = await outage.die_after_the_request(
        lambda: publish(outage.client.js, appended, subjects.DATASET_APPENDED)
    )
    await outage.restart_beyond_the_window("dispatcher-dataset", request["run_id"])
    await outage.assert_once("collect", request["run_id"])

    # The cursor moved on the redelivery: the next append is the next range, run once.
    later = datasets.append("events", {"id": [4], "text": ["d"]}, root=root)
    await publish(
        outage.client.js,
        DatasetAppended(dataset="events", from_version=version, to_version=later, added_records=1),
        subjects.DATASET_APPENDED,
    )

    async def two_runs() -> list[dict[str, Any]] | None:
        runs = await outage.client.list_runs(RunQuery(routine="collect", limit=10))
        done = [r for r in runs if r["status"] == "completed"]
        return done if len(done) == 2 else None

    runs = await eventually(two_runs, timeout=60, what="the next append's run")
    assert sorted(r["trigger_event"]["to_version"] for r in runs) == [version, later]
    assert len(outage.ran.read_text().split()) == 2


async def test_a_submitted_run_whose_ack_was_lost_past_the_window_runs_once(
    outage: Outage, tmp_path: Path
) -> None:
    outage.start_services()
    folder = write_routine(
        tmp_path / "once",
        marking_routine("Once", 'tick=on_schedule(cron="0 0 29 2 *")', "on_schedule", outage.ran),
    )
    await outage.client.create_routine(folder, "once")
    submitted: list[str] = []

    async def submit() -> None:
        submitted.append(await outage.client.submit("once"))

    request = await outage.die_after_the_request(submit)
    assert request["run_id"] == submitted[0]
    # run.submitted's consumer waits its 30 s ack wait before redelivering.
    await outage.restart_beyond_the_window(subjects.DISPATCHER_SUBMITTED_CONSUMER, submitted[0])
    await outage.assert_once("once", submitted[0])


async def test_a_downstream_run_whose_completion_ack_was_lost_past_the_window_runs_once(
    outage: Outage, tmp_path: Path
) -> None:
    outage.start_services()
    await outage.client.create_routine(write_routine(tmp_path / "up", UPSTREAM), "up")
    folder = write_routine(
        tmp_path / "down",
        marking_routine(
            "Down", 'upstream=on_workflow_success("up")', "on_workflow_success", outage.ran
        ),
    )
    await outage.client.create_routine(folder, "down")
    upstream = await outage.client.submit("up")

    async def upstream_requested() -> bool:
        return await outage.requests_stored() == 1

    await eventually(upstream_requested, timeout=30, what="the upstream run requested")
    # Armed while the upstream runs: the next request is the downstream one, published on
    # the upstream's completion, whose ack (and crash-loop and overlap bookkeeping) is lost.
    request = await outage.die_after_the_request(lambda: _nothing())
    assert request["routine"] == "down"
    assert request["parent_run_id"] == upstream
    await outage.restart_beyond_the_window("dispatcher-completed", request["run_id"])
    await outage.assert_once("down", request["run_id"], requests=2)


async def _nothing() -> None:
    return None
