"""The run model end to end: lifecycle, watch, artifacts, state, cancel, limits, lost runners."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import select
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from mainspring.client import Client
from mainspring.contract import subjects
from mainspring.contract.queries import RunQuery
from tests.harness import ROOT, Deployment, consumer_idle, eventually, write_routine

pytestmark = pytest.mark.e2e

# A trigger that never fires on its own (29 February at midnight; a run by hand gets a tick
# at now): these routines run when the test starts them.
NEVER = "on_schedule(cron='0 0 29 2 *')"

STEPS = f"""
import time
import pyarrow as pa
from mainspring import Routine, on_schedule


class Steps(Routine):
    def run(self, event={NEVER}, steps: int = 4, pause: float = 0.5) -> dict:
        for step in range(steps):
            self.progress((step + 1) / steps, f"step {{step + 1}} of {{steps}}")
            time.sleep(pause)
        table = pa.table({{"id": list(range(50)), "score": [i / 2 for i in range(50)],
                          "tag": ["a", "b", None, "d", "e"] * 10}})
        self.save_artifact("scores", table)
        self.state["count"] = self.state.get("count", 0) + 1
        return {{"count": self.state["count"]}}
"""

SLOW = f"""
import time
import pyarrow as pa
from mainspring import Routine, on_schedule


class Slow(Routine):
    max_concurrent = 1

    def run(self, event={NEVER}) -> dict:
        self.save_artifact("partial", pa.table({{"x": [1, 2, 3]}}))
        for step in range(600):
            self.progress(step / 600, "sleeping")
            time.sleep(0.1)
        return {{}}
"""


async def _run(client: Client, run_id: str) -> dict[str, Any]:
    run = await client.get_run(run_id)
    assert run is not None
    return run


async def _status(client: Client, run_id: str, *statuses: str) -> dict[str, Any] | None:
    run = await client.get_run(run_id)
    return run if run is not None and run["status"] in statuses else None


def _in_pty(deployment: Deployment, *args: str, timeout: float = 60) -> str:
    """Run `mainspring ARGS` on a pseudo-terminal and return what it drew."""
    master, slave = os.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "mainspring", *args],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=deployment.env(),
        cwd=deployment.home,
    )
    os.close(slave)
    output = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                output += chunk
            elif process.poll() is not None:
                break
    finally:
        os.close(master)
        process.wait(timeout=10)
    assert process.returncode == 0, output.decode(errors="replace")
    return output.decode(errors="replace")


ISOLATIONS = ["worker", "process"]


@pytest.mark.parametrize("isolation", ISOLATIONS)
async def test_lifecycle_watch_artifacts_and_state(
    deployment: Deployment, client: Client, tmp_path: Path, isolation: str
) -> None:
    deployment.extra_env["MAINSPRING_USER"] = "ada"
    deployment.start_all()
    deployment.cli(
        "routine", "create", str(write_routine(tmp_path / "steps", STEPS)), "--name", "steps"
    )

    run_id = deployment.cli(
        "run",
        "steps",
        "--input",
        "steps=8",
        "--statistics",
        "--previews",
        "--label",
        "nightly",
        "--isolation",
        isolation,
    ).stdout.strip()
    await eventually(lambda: _status(client, run_id, "running"), 60, what="run started")
    drawn = _in_pty(deployment, "runs", "watch", run_id)

    assert "[" in drawn
    assert "%" in drawn
    assert "step " in drawn
    assert "\r" in drawn, "a terminal gets a redrawn line, not a scroll of lines"
    assert f"run {run_id} completed" in drawn
    run = await _run(client, run_id)
    times = [
        datetime.fromisoformat(run[k])
        for k in ("created_at", "queued_at", "started_at", "finished_at")
    ]
    assert times == sorted(times)
    assert datetime.fromisoformat(run["updated_at"]) >= times[-1]
    assert run["started_by"] == "ada"
    assert run["source"] == "manual"
    assert run["attempt"] == 1
    assert run["queue_reason"] is None
    assert run["outputs"] == {"count": 1}
    assert run["isolation"] == isolation
    assert f"isolation: {isolation}" in deployment.cli("runs", "show", run_id).stdout

    listing = deployment.cli("runs", "artifacts", run_id).stdout
    assert "scores" in listing
    assert "statistics.json" in listing
    assert "preview.json" in listing
    deployment.cli(
        "runs", "artifacts", run_id, "--download", "scores", "--to", str(tmp_path / "got")
    )
    folder = tmp_path / "got" / "scores"
    table = pq.read_table(folder / "data.parquet")
    assert table.num_rows == 50
    assert table.column_names == ["id", "score", "tag"]
    stats = json.loads((folder / "statistics.json").read_text())
    assert stats["id"] == {
        "count": 50,
        "nulls": 0,
        "min": 0,
        "max": 49,
        "mean": 24.5,
        "distinct_estimate": 50,
    }
    assert stats["tag"]["nulls"] == 10
    assert stats["tag"]["distinct_estimate"] == 4
    assert json.loads((folder / "preview.json").read_text())[:2] == [
        {"id": 0, "score": 0.0, "tag": "a"},
        {"id": 1, "score": 0.5, "tag": "b"},
    ]
    assert json.loads((folder / "metadata.json").read_text())["rows"] == 50
    missing = deployment.cli("runs", "artifacts", run_id, "--download", "nope", check=False)
    assert missing.returncode == 2
    assert "has no artifact 'nope'" in missing.stderr

    # Instance state carries over: the second run starts from the first one's state.
    second = _in_pty(
        deployment,
        "run",
        "steps",
        "--input",
        "steps=1",
        "--input",
        "pause=0",
        "--no-store",
        "--isolation",
        isolation,
        "--wait",
    )
    assert "completed [" in second
    assert 'outputs: {"count": 2}' in second
    listed = await client.list_runs(RunQuery(routine="steps", label="nightly"))
    assert [r["id"] for r in listed] == [run_id]


@pytest.mark.parametrize("isolation", ISOLATIONS)
async def test_cancel_running_and_queued_with_queue_reason(
    deployment: Deployment, client: Client, tmp_path: Path, isolation: str
) -> None:
    deployment.extra_env["MAINSPRING_CANCEL_GRACE_S"] = "2"
    deployment.start_all()
    deployment.cli(
        "routine", "create", str(write_routine(tmp_path / "slow", SLOW)), "--name", "slow"
    )
    first = await client.submit("slow", isolation=isolation)
    await eventually(lambda: _progressed(client, first), 60, what="first run progressing")
    second = await client.submit("slow", isolation=isolation)

    held = await eventually(lambda: _status(client, second, "queued"), 60, what="second run queued")
    # Held by the dispatcher, which knows the routine's active runs.
    held = await eventually(
        lambda: _reason(client, second, "waiting for a free slot"), 30, what="queue reason"
    )
    assert held["queue_reason"] == "waiting for a free slot: max_concurrent=1, 1 running"
    listed = deployment.cli("runs", "list", "--routine", "slow", "--status", "queued").stdout
    assert "QUEUE_REASON" in listed
    assert "waiting for a free slot" in listed

    deployment.cli("runs", "cancel", second)
    cancelled_queued = await eventually(
        lambda: _status(client, second, "cancelled"), 30, what="queued run cancelled"
    )
    assert cancelled_queued["started_at"] is None
    deployment.cli("runs", "cancel", first)
    cancelled = await eventually(
        lambda: _status(client, first, "cancelled"), 30, what="running run cancelled"
    )

    assert cancelled["error"] == "cancelled by request"
    assert cancelled["isolation"] == isolation
    assert [a["name"] for a in cancelled["artifacts"]] == ["partial"]
    # The queued run never starts later, although its slot is free now: once the runners
    # have acknowledged every request, none is left that could start it.
    await eventually(
        functools.partial(consumer_idle, client.js, subjects.RUNNER_CONSUMER),
        30,
        what="runners done with every request",
    )
    never_started = await _run(client, second)
    assert never_started["status"] == "cancelled"
    assert never_started["started_at"] is None
    assert all(s.alive() for s in deployment.services.values())


async def _progressed(client: Client, run_id: str) -> dict[str, Any] | None:
    run = await client.get_run(run_id)
    return run if run is not None and (run.get("progress") or 0) > 0 else None


async def _reason(client: Client, run_id: str, text: str) -> dict[str, Any] | None:
    run = await client.get_run(run_id)
    return run if run is not None and text in (run.get("queue_reason") or "") else None


BROKEN: dict[str, tuple[str, str]] = {
    "syntax": ("import helper_broken\n", "SyntaxError"),
    "importerror": ("import not_a_module_anywhere\n", "ModuleNotFoundError"),
    "exception": ("raise ValueError('bad row 7')\n", "ValueError: bad row 7"),
    "sysexit": ("import sys; sys.exit(3)\n", "routine called sys.exit(3)"),
    "osexit": ("import os; os._exit(4)\n", "exited with code 4 without a result"),
    "segfault": ("import ctypes; ctypes.string_at(0)\n", "killed by SIGSEGV"),
    "loop": ("while True: pass\n", "timed out after 3s"),
    "membomb": (
        "hog = []\nwhile True: hog.append(bytearray(20 * 2**20))\n",
        "memory limit exceeded",
    ),
}


def _broken_routine(kind: str, body: str, isolation: str = "worker") -> str:
    indented = "".join(f"        {line}\n" for line in body.splitlines())
    return (
        "from mainspring import Routine, on_schedule\n\n\n"
        f"class Broken(Routine):\n"
        "    timeout_s = 3\n"
        "    memory = '300MiB'\n"
        f"    isolation = {isolation!r}\n\n"
        f"    def run(self, event={NEVER}) -> dict:\n"
        f"{indented}"
        "        return {}\n"
    )


RETRIED = f"""
from pathlib import Path
from mainspring import Routine, on_schedule


class Flaky(Routine):
    retries = 2
    retry_backoff_s = 0.5
    isolation = "{{isolation}}"

    def run(self, event={NEVER}, marker: str = "") -> dict:
        seen = Path(marker)
        attempts = int(seen.read_text()) + 1 if seen.exists() else 1
        seen.write_text(str(attempts))
        if attempts < 2:
            raise RuntimeError(f"flaky attempt {{attempts}}")
        return {{"attempts": attempts}}
"""


@pytest.mark.parametrize("isolation", ISOLATIONS)
async def test_broken_routines_fail_clearly_and_the_runner_lives(
    deployment: Deployment, client: Client, tmp_path: Path, isolation: str
) -> None:
    deployment.extra_env["MAINSPRING_RUNNER_SLOTS"] = "4"
    deployment.start_all()
    runs: dict[str, str] = {}
    for kind, (body, _) in BROKEN.items():
        folder = write_routine(tmp_path / kind, _broken_routine(kind, body, isolation))
        (folder / "helper_broken.py").write_text("def oops(:\n")
        deployment.cli("routine", "create", str(folder), "--name", kind)
        runs[kind] = await client.submit(kind)
    deployment.cli(
        "routine",
        "create",
        str(write_routine(tmp_path / "flaky", RETRIED.replace("{isolation}", isolation))),
        "--name",
        "flaky",
    )
    flaky = await client.submit("flaky", {"marker": str(tmp_path / "flaky.count")})
    hungry = write_routine(
        tmp_path / "hungry",
        _broken_routine(
            "hungry",
            "block = bytearray(200 * 2**20)\nblock[::4096] = b'x' * len(block[::4096])\n",
            isolation,
        ),
    )
    deployment.cli("routine", "create", str(hungry), "--name", "hungry")
    # The class allows 300MiB; this run's own --memory is lower and wins.
    over_own_limit = deployment.cli("run", "hungry", "--memory", "150MiB").stdout.strip()

    for kind, (_, reason) in BROKEN.items():
        run = await client.wait(runs[kind], timeout=120)
        assert run["status"] == "failed", (kind, run)
        assert reason in (run["error"] or "") + (run["traceback"] or ""), (kind, run["error"])
        assert run["isolation"] == isolation, (kind, run)
    limited = await client.wait(over_own_limit, timeout=60)
    assert limited["status"] == "failed"
    assert limited["error"] == "memory limit exceeded"
    assert limited["memory_limit"] == 150 * 2**20
    retried = await client.wait(flaky, timeout=60)
    assert retried["status"] == "completed"
    assert retried["attempt"] == 2
    assert retried["outputs"] == {"attempts": 2}
    assert deployment.services["runner-0"].alive()
    hello = write_routine(tmp_path / "ok", _broken_routine("ok", "pass\n", isolation))
    deployment.cli("routine", "create", str(hello), "--name", "ok")
    assert (await client.wait(await client.submit("ok"), timeout=60))["status"] == "completed"


SLEEPER = f"""
import time
from mainspring import Routine, on_schedule


class Sleeper(Routine):
    def run(self, event={NEVER}, seconds: float = 6.0) -> dict:
        for step in range(int(seconds * 10)):
            self.progress(step / (seconds * 10), "working")
            time.sleep(0.1)
        return {{"slept": seconds}}
"""


@pytest.mark.parametrize("isolation", ISOLATIONS)
async def test_killed_runners_run_finishes_elsewhere_within_the_bound(
    deployment: Deployment, client: Client, tmp_path: Path, isolation: str
) -> None:
    deployment.extra_env.update({"MAINSPRING_RUN_ACK_WAIT_S": "4", "MAINSPRING_HEARTBEAT_S": "1"})
    deployment.start_all(runners=2)
    deployment.cli(
        "routine", "create", str(write_routine(tmp_path / "s", SLEEPER)), "--name", "sleeper"
    )
    run_id = await client.submit("sleeper", {"seconds": 4.0}, isolation=isolation)
    running = await eventually(lambda: _progressed(client, run_id), 60, what="run progressing")
    holder_pid = int(running["runner"].rsplit(":", 1)[1])
    holder = next(
        s
        for s in deployment.services.values()
        if s.process is not None and s.process.pid == holder_pid
    )

    # Mid-flight: the holder is alive and the run is its first attempt, not yet finished.
    assert holder.alive()
    assert running["status"] == "running"
    assert running["attempt"] == 1
    holder.kill(signal.SIGKILL)
    killed_at = time.monotonic()
    finished = await client.wait(run_id, timeout=60)

    assert finished["status"] == "completed"
    assert finished["attempt"] == 2
    assert finished["runner"] != running["runner"]
    assert finished["isolation"] == isolation
    # Bound: ack wait (4s) + the run itself (4s) + slack for a loaded machine.
    assert time.monotonic() - killed_at < 40


IN_MEMORY = f"""
from mainspring import Routine, on_schedule


class Local(Routine):
    allow_in_memory = True

    def run(self, event={NEVER}, factor: int = 2) -> dict:
        self.progress(0.5, "half way")
        return {{"value": 21 * factor, "run": self.run_info.number}}
"""


async def test_in_memory_run_is_recorded_and_refused_when_not_allowed(
    deployment: Deployment, client: Client, tmp_path: Path
) -> None:
    deployment.start("recorder")
    deployment.start("dispatcher")
    deployment.cli(
        "routine", "create", str(write_routine(tmp_path / "local", IN_MEMORY)), "--name", "local"
    )
    deployment.cli(
        "routine", "create", str(write_routine(tmp_path / "s", SLEEPER)), "--name", "sleeper"
    )

    direct = deployment.cli(
        "run", "local", "--in-memory", "--input", "factor=1", "--attr", "team=ml", "--label", "a"
    )
    prompted = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "mainspring", "run", "local", "--in-memory", "--interactive"],
        input="lots\n3\n",
        env=deployment.env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    refused = deployment.cli("run", "sleeper", "--in-memory", check=False)

    assert 'outputs: {"value": 21, "run": 1}' in direct.stdout
    assert "factor (int, default 2): " in prompted.stdout
    assert "factor: 'lots' is not a valid int" in prompted.stdout
    assert "; try again" in prompted.stdout
    assert '"value": 63' in prompted.stdout, prompted.stdout + prompted.stderr
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1
    assert "does not allow in-memory runs" in refused.stderr
    recorded = await eventually(lambda: _all_completed(client), 30, what="in-memory runs recorded")
    assert sorted(r["run_number"] for r in recorded) == [1, 2]
    assert {r["source"] for r in recorded} == {"manual"}

    # Progress has its own stream and recorder consumer: it may land a moment after the run.
    async def progress_recorded() -> list[str] | None:
        shown = json.loads(deployment.cli("runs", "show", recorded[0]["id"], "--json").stdout)
        return [p["message"] for p in shown["progress_history"]] or None

    assert await eventually(progress_recorded, what="the run's progress recorded") == ["half way"]
    first = min(recorded, key=lambda r: r["run_number"])
    for flags, expected in [
        (["--attr", "team=ml"], [first["id"]]),
        (["--label", "a", "--status", "completed"], [first["id"]]),
        (["--source", "api"], []),
        (["--since", first["created_at"]], [r["id"] for r in recorded]),
        (["--until", first["created_at"]], []),
    ]:
        found = json.loads(
            deployment.cli("runs", "list", "--routine", "local", "--json", *flags).stdout
        )
        assert sorted(r["id"] for r in found) == sorted(expected), flags
    assert "local" in deployment.cli("runs", "list", "--routine", "local").stdout


async def _all_completed(client: Client) -> list[dict[str, Any]] | None:
    runs = await client.list_runs(RunQuery(routine="local", source="manual"))
    return runs if len(runs) == 2 and all(r["status"] == "completed" for r in runs) else None


async def test_a_stopping_runner_hands_its_run_back(
    deployment: Deployment, client: Client, tmp_path: Path
) -> None:
    deployment.extra_env.update(
        {"MAINSPRING_DRAIN_TIMEOUT_S": "1", "MAINSPRING_RUN_ACK_WAIT_S": "60"}
    )
    deployment.start_all(runners=1)
    deployment.cli(
        "routine", "create", str(write_routine(tmp_path / "s", SLEEPER)), "--name", "sleeper"
    )
    run_id = await client.submit("sleeper", {"seconds": 5.0})
    running = await eventually(lambda: _status(client, run_id, "running"), 60, what="run started")
    deployment.start("runner", "runner-1")
    stopping = deployment.services["runner-0"]

    await asyncio.to_thread(stopping.kill, signal.SIGTERM)
    stopped_at = time.monotonic()
    finished = await client.wait(run_id, timeout=90)

    assert stopping.process is not None
    assert stopping.process.returncode == 0
    assert finished["status"] == "completed"
    assert finished["runner"] != running["runner"]
    # Handed back by a clean stop, the interrupted attempt is not charged to the run.
    assert finished["attempt"] == 1
    assert "draining: 1 run(s) in progress" in stopping.log()
    # Handed back at once, not left to the 60s ack wait.
    assert time.monotonic() - stopped_at < 45


async def test_a_run_whose_runners_keep_dying_fails_with_the_reason(
    deployment: Deployment, client: Client, tmp_path: Path
) -> None:
    deployment.extra_env.update({"MAINSPRING_RUN_ACK_WAIT_S": "3", "MAINSPRING_HEARTBEAT_S": "1"})
    deployment.start_all(runners=3)
    deployment.cli(
        "routine", "create", str(write_routine(tmp_path / "s", SLEEPER)), "--name", "sleeper"
    )
    run_id = await client.submit("sleeper", {"seconds": 60.0})

    for attempt in (1, 2):
        running = await eventually(
            functools.partial(_attempt, client, run_id, attempt),
            60,
            what=f"attempt {attempt} running",
        )
        pid = int(running["runner"].rsplit(":", 1)[1])
        holder = next(s for s in deployment.services.values() if s.process and s.process.pid == pid)
        assert holder.alive(), f"attempt {attempt} is held by a runner that already died"
        await asyncio.to_thread(holder.kill, signal.SIGKILL)
    failed = await client.wait(run_id, timeout=60)

    assert failed["status"] == "failed"
    assert failed["error"].startswith("runner lost: 2 attempt(s) ended without a result")


async def _attempt(client: Client, run_id: str, attempt: int) -> dict[str, Any] | None:
    run = await client.get_run(run_id)
    ok = run is not None and run["status"] == "running" and run["attempt"] == attempt
    return run if ok else None


async def test_a_running_run_with_no_runner_left_is_failed_by_the_sweep(
    deployment: Deployment, client: Client, tmp_path: Path
) -> None:
    deployment.extra_env.update(
        {
            "MAINSPRING_HEARTBEAT_S": "1",
            "MAINSPRING_STALE_RUN_AFTER_S": "4",
            "MAINSPRING_STALE_SWEEP_EVERY_S": "1",
            "MAINSPRING_RUN_ACK_WAIT_S": "3",
        }
    )
    deployment.start_all(runners=1)
    deployment.cli(
        "routine", "create", str(write_routine(tmp_path / "s", SLEEPER)), "--name", "sleeper"
    )
    run_id = await client.submit("sleeper", {"seconds": 60.0})
    started = await eventually(lambda: _status(client, run_id, "running"), 60, what="run started")
    holder = deployment.services["runner-0"]
    assert holder.process is not None
    # Mid-flight: the only runner holds the run, which sleeps for a minute.
    assert started["runner"].endswith(f":{holder.process.pid}")

    await asyncio.to_thread(holder.kill, signal.SIGKILL)
    failed = await eventually(
        lambda: _status(client, run_id, "failed"), 30, what="stale run failed"
    )

    assert failed["error"].startswith("no runner heartbeat for 4s")
    # A runner that comes back does not run it behind the record's back: the request the
    # dead runner never acknowledged is redelivered to it, and it acknowledges without running.
    deployment.start("runner", "runner-1")
    await eventually(
        functools.partial(consumer_idle, client.js, subjects.RUNNER_CONSUMER),
        60,
        what="the redelivered request acknowledged",
    )
    after = await _run(client, run_id)
    assert after["status"] == "failed"
    assert after["attempt"] == 1


COUNTER = f"""
import time
from mainspring import Routine, on_schedule


class Counter(Routine):
    def run(self, event={NEVER}, pause: float = 0.0) -> dict:
        seen = self.state.get("n", 0)
        time.sleep(pause)
        self.state["n"] = seen + 1
        return {{"n": seen + 1}}
"""


async def test_concurrent_state_writes_conflict_loudly(
    deployment: Deployment, client: Client, tmp_path: Path
) -> None:
    deployment.start_all()
    deployment.cli(
        "routine", "create", str(write_routine(tmp_path / "c", COUNTER)), "--name", "counter"
    )
    slow = await client.submit("counter", {"pause": 4.0})
    await eventually(lambda: _status(client, slow, "running"), 60, what="slow run started")
    fast = await client.submit("counter", {"pause": 0.0})

    fast_run = await client.wait(fast, timeout=60)
    slow_run = await client.wait(slow, timeout=60)
    after = await client.wait(await client.submit("counter"), timeout=60)

    assert fast_run["status"] == "completed"
    assert fast_run["outputs"] == {"n": 1}
    assert slow_run["status"] == "failed"
    assert slow_run["error"].startswith("state conflict: another run of counter changed its state")
    assert after["outputs"] == {"n": 2}, "the conflicting run did not overwrite the state"


COUNTED = f"""
import time
from pathlib import Path
from mainspring import Routine, on_schedule


class Counted(Routine):
    def run(self, event={NEVER}, log: str = "", seconds: float = 1.0) -> dict:
        with Path(log).open("a") as out:
            out.write(self.run_info.id + "\\n")
        time.sleep(seconds)
        return {{}}
"""


async def test_runs_waiting_for_a_slot_longer_than_the_ack_wait_run_once(
    deployment: Deployment, client: Client, tmp_path: Path
) -> None:
    deployment.extra_env.update(
        {
            "MAINSPRING_RUNNER_SLOTS": "1",
            "MAINSPRING_RUN_ACK_WAIT_S": "2",
            "MAINSPRING_HEARTBEAT_S": "0.5",
        }
    )
    deployment.start_all()
    deployment.cli(
        "routine", "create", str(write_routine(tmp_path / "c", COUNTED)), "--name", "counted"
    )
    log = tmp_path / "executions.log"
    run_ids = [await client.submit("counted", {"log": str(log), "seconds": 5.0}) for _ in range(3)]

    finished = [await client.wait(run_id, timeout=90) for run_id in run_ids]

    assert [r["status"] for r in finished] == ["completed"] * 3
    assert [r["attempt"] for r in finished] == [1, 1, 1]
    assert sorted(log.read_text().split()) == sorted(run_ids), "each run executed exactly once"
