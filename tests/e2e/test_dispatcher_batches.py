"""The dispatcher fetches what is waiting in batches and handles them alongside each other,
yet each routine's events keep their order, and one malformed message in a batch is parked
on its own."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from mainspring.client import Client
from mainspring.contract import subjects
from mainspring.contract.messages import RequestRun
from tests.harness import Deployment, eventually, write_routine

pytestmark = pytest.mark.e2e

ROUTINE = """
from mainspring import Routine, on_schedule


class Quick(Routine):
    def run(self, tick=on_schedule(cron="0 0 29 2 *")) -> dict:
        return {{"ok": True}}
"""


async def requested_runs(client: Client, wanted: int) -> dict[str, RequestRun]:
    """Every run request on the stream, by run id, once `wanted` of them are there."""
    found: dict[str, RequestRun] = {}
    subscription = await client.js.subscribe(subjects.RUN_REQUESTED, ordered_consumer=True)
    try:
        while len(found) < wanted:
            message = await subscription.next_msg(timeout=30)
            request = RequestRun.model_validate_json(message.data)
            found[request.run_id] = request
    finally:
        await subscription.unsubscribe()
    return found


async def test_a_backlog_is_numbered_in_each_routines_submit_order(
    deployment: Deployment, client: Client, tmp_path: Path
) -> None:
    deployment.start("recorder")
    dispatcher = deployment.start("dispatcher")
    await client.wait_ready()
    for name in ("first", "second"):
        await client.create_routine(write_routine(tmp_path / name, ROUTINE.format()), name)
    assert dispatcher.process is not None

    # Frozen while the submits arrive, the dispatcher finds them all waiting: its fetches
    # return full batches with both routines' submits interleaved.
    dispatcher.process.send_signal(signal.SIGSTOP)
    submitted: dict[str, list[str]] = {"first": [], "second": []}
    try:
        for index in range(150):
            name = "first" if index % 3 else "second"
            submitted[name].append(await client.submit(name))
            if index == 70:
                await client.js.publish(subjects.RUN_SUBMITTED, b'{"routine": 7}')
    finally:
        dispatcher.process.send_signal(signal.SIGCONT)

    requests = await requested_runs(client, 150)
    for name, run_ids in submitted.items():
        numbers = [requests[run_id].run_number for run_id in run_ids]
        assert numbers == list(range(1, len(run_ids) + 1)), name

    async def parked() -> bool:
        info = await client.js.stream_info(subjects.STREAM, subjects_filter="deadletter.>")
        return bool(info.state.subjects) and any(
            "run.submitted" in subject for subject in (info.state.subjects or {})
        )

    await eventually(parked, timeout=15)
