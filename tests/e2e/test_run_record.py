"""The complete run record, run logs and clean-up, over a real deployment.

One routine serves every check: how a run was invoked and executed, its options and the
resources it used; its output captured in a reused worker and in a fresh process, streamed
live (CLI follower and web page) and kept in the artifact store; deletion by id and by
routine that never touches a running run; the retention setting applied by the recorder.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from mainspring.client import Client
from tests.e2e.test_web import fetch, web  # noqa: F401 (web is a fixture)
from tests.harness import Deployment, eventually, write_routine

pytestmark = pytest.mark.e2e

LOG_CAP = 3000
CHATTY = """
import sys, time
from pathlib import Path
from mainspring import Routine, on_schedule

class Chatty(Routine):
    allow_in_memory = True

    def run(self, tick=on_schedule(every="1d"), go: str = "", noise: int = 0):
        print("hello from stdout", flush=True)
        print("hello from stderr", file=sys.stderr, flush=True)
        deadline = time.monotonic() + 30
        while go and not Path(go).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        print("after the go", flush=True)
        print("x" * noise, flush=True)
        return {"total": sum(i * i for i in range(300_000))}
"""


@pytest.fixture
def system(deployment: Deployment) -> Deployment:
    """The whole system with a small log cap and a retention of three runs per routine."""
    deployment.extra_env.update(
        MAINSPRING_RUN_LOG_MAX_BYTES=str(LOG_CAP),
        MAINSPRING_RETENTION_RUNS_PER_ROUTINE="3",
        MAINSPRING_RETENTION_EVERY_S="0.5",
    )
    deployment.start_all()
    return deployment


async def test_run_record_logs_and_clean_up(
    system: Deployment,
    client: Client,
    web: str,  # noqa: F811 (the fixture imported above)
    tmp_path: Path,
) -> None:
    routine = write_routine(tmp_path / "chatty", CHATTY)
    system.cli("routine", "create", str(routine), "--name", "chatty")
    go = tmp_path / "go"

    # A run in a reused worker, followed live while it waits for `go`.
    run_id = await client.submit(
        "chatty",
        {"go": str(go), "noise": 2 * LOG_CAP},
        name="nightly eval",
        description="compare the red kite models",
        statistics=True,
        invocation="workflow",
    )
    heard: list[str] = []

    async def follow() -> None:
        async for text in client.follow_log(run_id):
            heard.append(text)

    following = asyncio.create_task(follow())

    async def heard_hello() -> bool:
        return "hello from stdout" in "".join(heard)

    await eventually(heard_hello, what="the follower to hear the run's first line")
    _, live = await fetch(f"{web}/api/runs/{run_id}/log")
    assert live["live"] is True
    assert "hello from stderr" in live["log"]
    refused = system.cli("runs", "delete", run_id).stdout
    assert f"run {run_id} has not ended: not deleted" in refused
    go.touch()
    await asyncio.wait_for(following, 60)
    followed = "".join(heard)
    assert "after the go" in followed
    assert "output cut here: the log keeps the first 3000 bytes" in followed

    run = await client.wait(run_id, timeout=60)
    assert run["status"] == "completed", run
    assert (run["invocation"], run["execution"], run["isolation"]) == (
        "workflow",
        "background",
        "worker",
    )
    assert (run["statistics"], run["previews"], run["store_artifacts"]) == (True, False, True)
    assert run["peak_memory_bytes"] > 10 * 2**20, "a Python process tree holds more than 10 MiB"
    assert 0 < run["cpu_seconds"] < run["wall_seconds"] + 5
    assert run["artifact_location"] == str(system.home / "artifacts" / "runs" / run_id)
    shown = system.cli("runs", "show", run_id).stdout
    for line in (
        "invocation: workflow",
        "execution: background",
        "options: statistics on, previews off, store artifacts on",
        "resources: peak memory",
        f"artifacts at: {run['artifact_location']}",
        "log: ",
    ):
        assert line in shown, shown

    stored = system.cli("runs", "logs", run_id).stdout
    assert stored.startswith("hello from stdout\nhello from stderr\nafter the go\nxxx")
    assert "output cut here" in stored
    assert len(stored.encode()) < LOG_CAP + 300, "the cap holds, with its marker"
    _, page = await fetch(f"{web}/api/runs/{run_id}/log")
    assert (page["live"], page["log"]) == (False, stored)

    # A fresh process per run captures its output the same way.
    fresh = json.loads(
        system.cli(
            "run", "chatty", "--isolation", "process", "--run-name", "smoke", "--wait", "--json"
        ).stdout
    )
    assert (fresh["isolation"], fresh["invocation"]) == ("process", "direct")
    assert (await client.run_log(fresh["id"]) or "").startswith(
        "hello from stdout\nhello from stderr\n"
    )
    in_memory = await client.run_in_memory("chatty")
    recorded = await client.wait(in_memory["id"], timeout=30)
    assert recorded["execution"] == "in_memory"
    assert recorded["wall_seconds"] > 0

    named = json.loads(system.cli("runs", "list", "--name", "EVAL", "--json").stdout)
    assert [r["id"] for r in named] == [run_id]
    described = json.loads(system.cli("runs", "list", "--description", "kite", "--json").stdout)
    assert [r["id"] for r in described] == [run_id]

    # Clean-up: a dry run deletes nothing; a delete takes rows, logs and artifacts.
    dry = system.cli("runs", "delete", "--routine", "chatty", "--dry-run").stdout
    assert "would delete 3 runs" in dry
    assert await client.get_run(run_id) is not None
    deleted = system.cli("runs", "delete", run_id, "no-such-run", check=False)
    assert "run no-such-run not found: nothing to delete" in deleted.stdout
    assert "deleted 1 run with their progress, logs and artifacts" in deleted.stdout
    assert await client.get_run(run_id) is None
    assert not (system.home / "artifacts" / "runs" / run_id).exists()
    assert await client.run_log(run_id) is None

    # Retention: three runs per routine; the recorder deletes the oldest on its own.
    for _ in range(3):
        system.cli("run", "chatty", "--wait")

    async def three_left() -> list[str]:
        runs = await client.list_runs()
        return [r["id"] for r in runs if r["routine"] == "chatty"] if len(runs) == 3 else []

    kept = await eventually(three_left, what="the retention to keep three runs")
    assert fresh["id"] not in kept
    assert not (system.home / "artifacts" / "runs" / fresh["id"]).exists()
