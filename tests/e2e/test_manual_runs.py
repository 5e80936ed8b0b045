"""A manual run goes through every service over real JetStream and lands in the database."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mainspring.client import Client
from tests.harness import Deployment, copy_example, eventually, parked_reason, write_routine

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize(
    "deployment", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
async def test_manual_run_is_recorded_completed(system: Deployment, tmp_path: Path) -> None:
    folder = copy_example("hello", tmp_path)
    system.cli("routine", "create", str(folder), "--name", "hello")

    result = system.cli(
        "run",
        "hello",
        "--input",
        "name=Ada",
        "--input",
        "steps=2",
        "--label",
        "smoke",
        "--attr",
        "team=data",
        "--wait",
        "--timeout",
        "60",
    )

    assert "status: completed" in result.stdout
    # --source manual: hello also runs on its 10s schedule while the test runs.
    listed = json.loads(
        system.cli("runs", "list", "--routine", "hello", "--source", "manual", "--json").stdout
    )
    assert [r["status"] for r in listed] == ["completed"]
    run = listed[0]
    # hello's own 10s schedule may have taken number 1 first.
    assert run["outputs"] == {"greeting": "hello, Ada", "run_number": run["run_number"]}
    assert run["inputs"] == {"name": "Ada", "steps": 2}
    assert run["labels"] == ["smoke"]
    assert run["attributes"] == {"team": "data"}
    assert run["source"] == "manual"
    assert run["run_number"] >= 1
    assert run["started_at"]
    assert run["finished_at"]
    assert run["queued_at"]

    # Progress has its own stream and recorder consumer: it may land a moment after the run.
    async def progress_recorded() -> list[float] | None:
        shown = json.loads(system.cli("runs", "show", run["id"], "--json").stdout)
        fractions = [round(p["fraction"], 2) for p in shown["progress_history"]]
        return fractions if len(fractions) >= 2 else None

    assert await eventually(progress_recorded, what="the run's progress recorded") == [0.5, 1.0]


async def test_bad_contract_is_refused_with_one_line(
    deployment: Deployment, tmp_path: Path
) -> None:
    folder = write_routine(
        tmp_path / "bad",
        (
            "from mainspring import Routine, on_schedule\n"
            "class Bad(Routine):\n"
            "    def run(self, tick=on_schedule(every='1m'), size=3):\n"
            "        return {}\n"
        ),
    )
    result = deployment.cli("routine", "create", str(folder), "--name", "bad", check=False)

    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "'size'" in result.stderr
    assert "type annotation" in result.stderr


async def test_bad_input_is_refused_before_the_run(system: Deployment, tmp_path: Path) -> None:
    folder = copy_example("hello", tmp_path)
    system.cli("routine", "create", str(folder), "--name", "hello")

    result = system.cli("run", "hello", "--input", "steps=many", check=False)

    assert result.returncode == 2
    assert "input 'steps'" in result.stderr
    assert "valid int" in result.stderr


async def test_malformed_message_is_dead_lettered_and_service_lives(
    system: Deployment, client: Client, tmp_path: Path
) -> None:
    dead = await client.nc.subscribe("deadletter.>")
    await client.publish("run.submitted", b'{"routine": 42}')

    message = await dead.next_msg(timeout=30)

    # A subscription nobody reads would hold the client's drain at close for its timeout.
    await dead.unsubscribe()
    assert message.subject == "deadletter.run.submitted"
    assert "malformed SubmitRun" in parked_reason(message)
    folder = copy_example("hello", tmp_path)
    system.cli("routine", "create", str(folder), "--name", "hello")
    assert "status: completed" in system.cli("run", "hello", "--wait", "--timeout", "60").stdout
    assert all(s.alive() for s in system.services.values())


def test_up_runs_everything_refuses_a_second_up_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    env = {**__import__("os").environ, "MAINSPRING_HOME": str(tmp_path / "home")}
    env.pop("MAINSPRING_NATS_URL", None)
    up = subprocess.Popen(
        [sys.executable, "-m", "mainspring", "up"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert up.stdout is not None
        assert "mainspring is up" in up.stdout.readline()
        second = subprocess.run(
            [sys.executable, "-m", "mainspring", "up"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert second.returncode == 2
        assert "already up" in second.stderr
        folder = copy_example("hello", tmp_path)
        created = subprocess.run(
            [
                sys.executable,
                "-m",
                "mainspring",
                "routine",
                "create",
                str(folder),
                "--name",
                "hello",
            ],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
        )
        assert created.returncode == 0, created.stderr
        run = subprocess.run(
            [sys.executable, "-m", "mainspring", "run", "hello", "--wait", "--timeout", "60"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=90,
        )
        assert "status: completed" in run.stdout, run.stderr
    finally:
        up.send_signal(signal.SIGINT)
        up.wait(timeout=30)
    assert up.returncode == 0
    assert not (tmp_path / "home" / "up.json").exists()
    assert _processes_left_mentioning(str(tmp_path / "home")) == ""


def _processes_left_mentioning(text: str, timeout: float = 10.0) -> str:
    """The pids of processes whose command line mentions `text`, once none are left or the
    timeout passes (the parts `up` stopped may take a moment to be reaped)."""
    deadline = time.monotonic() + timeout
    while True:
        found = subprocess.run(["pgrep", "-f", text], capture_output=True, text=True)
        left = found.stdout.strip()
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)
