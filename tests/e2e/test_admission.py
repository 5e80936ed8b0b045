"""Runs of a routine with max_concurrent wait in the dispatcher, not in a runner's nak loop.

Each run appends its start and end to a file outside the system, so what ran, how often and
whether two overlapped is read from the side effect, not from what the system reports.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.js import JetStreamContext

from mainspring.client import Client
from mainspring.contract import subjects
from mainspring.contract.queries import RunQuery
from tests.harness import Deployment, consumer_info, eventually, kill_holding, write_routine

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

SERIAL = """
import json
import time
from pathlib import Path

from mainspring import Routine, on_schedule


class Serial(Routine):
    max_concurrent = 1

    def run(self, tick=on_schedule(cron="0 0 29 2 *"), log: str = "", seconds: float = 0.1) -> dict:
        with Path(log).open("a") as out:
            out.write(json.dumps({"run": self.run_info.id, "at": time.time(), "edge": "start"}) + "\\n")
        time.sleep(seconds)
        with Path(log).open("a") as out:
            out.write(json.dumps({"run": self.run_info.id, "at": time.time(), "edge": "end"}) + "\\n")
        return {}
"""

REASON = "waiting for a free slot: max_concurrent=1"


@pytest.fixture
async def js(deployment: Deployment) -> AsyncIterator[JetStreamContext]:
    connection = await nats.connect(deployment.nats.url)
    yield connection.jetstream()
    await connection.close()


def edges(log: Path) -> list[dict[str, Any]]:
    """Every start and end the runs wrote, in the order they happened."""
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    return sorted(lines, key=lambda line: float(line["at"]))


def assert_one_at_a_time(log: Path, run_ids: list[str]) -> None:
    """Each run started exactly once and ended before the next one started."""
    found = edges(log)
    starts = sorted(line["run"] for line in found if line["edge"] == "start")
    assert starts == sorted(run_ids), "each run executed exactly once"
    running: str | None = None
    for line in found:
        if line["edge"] == "start":
            assert running is None, f"{line['run']} started while {running} was running"
            running = line["run"]
        else:
            assert running == line["run"]
            running = None


async def held_reasons(js: JetStreamContext) -> dict[str, str]:
    """The reasons the dispatcher published for the runs it held, by run id."""
    reasons: dict[str, str] = {}
    subscription = await js.subscribe(subjects.RUN_QUEUED, ordered_consumer=True)
    try:
        while True:
            try:
                message = await subscription.next_msg(timeout=1)
            except TimeoutError:
                return reasons
            body = json.loads(message.data)
            reasons.setdefault(body["run_id"], body["reason"])
    finally:
        await subscription.unsubscribe()


def create_serial(deployment: Deployment, folder: Path) -> None:
    deployment.cli("routine", "create", str(write_routine(folder, SERIAL)), "--name", "serial")


async def test_thirty_runs_behind_max_concurrent_one_run_one_at_a_time_each_held_with_its_reason(
    system: Deployment, client: Client, js: JetStreamContext, tmp_path: Path
) -> None:
    create_serial(system, tmp_path / "r")
    log = tmp_path / "edges.jsonl"
    first = await client.submit("serial", {"log": str(log), "seconds": 2.0})
    run_ids = [first]
    run_ids += [await client.submit("serial", {"log": str(log), "seconds": 0.1}) for _ in range(29)]

    async def held_shown() -> list[dict[str, Any]] | None:
        queued = await client.list_runs(RunQuery(routine="serial", status="queued"))
        shown = [r for r in queued if (r.get("queue_reason") or "").startswith(REASON)]
        return shown if len(shown) >= 10 else None

    shown = await eventually(held_shown, 60, what="held runs listed queued with their reason")
    assert all(r["queue_reason"] == f"{REASON}, 1 running" for r in shown)

    finished = [await client.wait(run_id, timeout=150) for run_id in run_ids]

    assert [r["status"] for r in finished] == ["completed"] * 30
    assert [r["attempt"] for r in finished] == [1] * 30
    assert_one_at_a_time(log, run_ids)
    reasons = await held_reasons(js)
    held = [run_id for run_id in run_ids if run_id in reasons]
    assert len(held) >= 29, "every run behind the first was held by the dispatcher"
    assert {reasons[run_id] for run_id in held} == {f"{REASON}, 1 running"}


async def test_held_runs_survive_a_dispatcher_killed_mid_release_and_run_once(
    system: Deployment, client: Client, js: JetStreamContext, tmp_path: Path
) -> None:
    create_serial(system, tmp_path / "r")
    log = tmp_path / "edges.jsonl"
    run_ids = [await client.submit("serial", {"log": str(log), "seconds": 0.3}) for _ in range(15)]
    await eventually(lambda: _started(log, 3), 60, what="a few runs done while the rest are held")

    # Killed while it holds a completion it has not acknowledged: mid-release.
    caught = await kill_holding(system.services["dispatcher"], js, "dispatcher-completed")
    assert caught, "the dispatcher was killed while handling a completion"
    system.start("dispatcher")

    finished = [await client.wait(run_id, timeout=150) for run_id in run_ids]

    assert [r["status"] for r in finished] == ["completed"] * 15
    assert_one_at_a_time(log, run_ids)


async def test_held_runs_cost_the_runner_no_redeliveries(
    system: Deployment, client: Client, js: JetStreamContext, tmp_path: Path
) -> None:
    create_serial(system, tmp_path / "r")
    log = tmp_path / "edges.jsonl"
    first = await client.submit("serial", {"log": str(log), "seconds": 7.0})
    await eventually(lambda: _started(log, 1), 60, what="the first run started")
    waiting = [await client.submit("serial", {"log": str(log), "seconds": 0.0}) for _ in range(20)]

    await eventually(
        lambda: _held(js, waiting), 30, what="the dispatcher holding the 20 waiting runs"
    )
    before = (await consumer_info(js, subjects.RUNNER_CONSUMER)).num_redelivered or 0
    first_run = await client.wait(first, timeout=60)
    after = (await consumer_info(js, subjects.RUNNER_CONSUMER)).num_redelivered or 0

    assert first_run["status"] == "completed"
    # Held in a runner, each of the 20 would come back every hold_retry_s (1 s) meanwhile.
    assert after - before <= 1, f"the runner's queue redelivered {after - before} times"
    finished = [await client.wait(run_id, timeout=90) for run_id in waiting]
    assert [r["status"] for r in finished] == ["completed"] * 20
    assert_one_at_a_time(log, [first, *waiting])


def started_count(log: Path) -> int:
    """How many runs started so far."""
    if not log.exists():
        return 0
    return sum(1 for line in edges(log) if line["edge"] == "start")


async def _started(log: Path, count: int) -> bool:
    return started_count(log) >= count


async def _held(js: JetStreamContext, run_ids: list[str]) -> bool:
    reasons = await held_reasons(js)
    return all(run_id in reasons for run_id in run_ids)
