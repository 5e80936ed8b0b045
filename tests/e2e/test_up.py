"""`mainspring up` as a supervisor: the bus restarts too; status, down, logs and --detach."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mainspring.apps.status import collect_status, everything_ready, pid_alive, read_up_state
from mainspring.apps.up import free_port, port_is_free
from mainspring.base.settings import Settings
from mainspring.base.units import format_bytes
from mainspring.runtime.bus import requirements
from tests.harness import copy_example, eventually, write_routine

pytestmark = pytest.mark.e2e

EVERY_SECOND = """
from mainspring import Routine, on_schedule


class Tick(Routine):
    def run(self, tick=on_schedule(every="1s")) -> dict:
        return {"ticked": True}
"""


@dataclass
class Up:
    """A `mainspring up` process in its own home, driven like a user would from a terminal."""

    home: Path
    cwd: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def output_path(self) -> Path:
        return self.cwd / "up.out"

    def env(self) -> dict[str, str]:
        env = {**os.environ, "MAINSPRING_HOME": str(self.home)}
        env.pop("MAINSPRING_NATS_URL", None)
        return env

    def settings(self) -> Settings:
        return Settings(home=self.home)

    def start(self, *flags: str) -> None:
        """`mainspring up` in the foreground of its own session (so a test cannot signal pytest)."""
        with self.output_path.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "mainspring", "up", *flags],
                env=self.env(),
                cwd=self.cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """The real `mainspring` command against this home."""
        return subprocess.run(
            [sys.executable, "-m", "mainspring", *args],
            env=self.env(),
            cwd=self.cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def output(self) -> str:
        return self.output_path.read_text(errors="replace") if self.output_path.exists() else ""

    def state(self) -> dict[str, Any]:
        state = read_up_state(self.settings())
        assert state is not None, f"up wrote no state file; its output:\n{self.output()}"
        return state

    def part_pid(self, name: str) -> int:
        return int(next(p["pid"] for p in self.state()["parts"] if p["name"] == name))

    async def ready(self, timeout: float = 90) -> dict[str, Any]:
        async def check() -> dict[str, Any] | None:
            status = collect_status(self.settings())
            return status if everything_ready(status) else None

        try:
            ready: dict[str, Any] = await eventually(check, timeout, what="every part ready")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.logs()}") from None
        return ready

    def logs(self) -> str:
        parts = [f"===== up =====\n{self.output()[-4000:]}"]
        for log in sorted((self.home / "logs").glob("*.log")):
            parts.append(f"===== {log.stem} =====\n{log.read_text(errors='replace')[-3000:]}")
        return "\n".join(parts)

    def stop(self) -> None:
        """Whatever the test left running: SIGTERM up, then kill what is still there."""
        state = read_up_state(self.settings()) or {}
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        up_pid = state.get("pid")
        if isinstance(up_pid, int) and pid_alive(up_pid) and up_pid != os.getpid():
            with contextlib.suppress(OSError):
                os.kill(up_pid, signal.SIGTERM)
            with contextlib.suppress(AssertionError):
                _wait_gone([up_pid], 40)
        for part in state.get("parts") or []:
            if pid_alive(part.get("pid")):
                with contextlib.suppress(OSError):
                    os.kill(part["pid"], signal.SIGKILL)


def _wait_gone(pids: list[int], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while any(pid_alive(pid) for pid in pids):
        if time.monotonic() > deadline:
            raise AssertionError(
                f"still alive after {timeout}s: {[p for p in pids if pid_alive(p)]}"
            )
        time.sleep(0.1)


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Up]:
    """A home for `mainspring up`, everything it started stopped afterwards."""
    system = Up(home=tmp_path / "home", cwd=tmp_path)
    try:
        yield system
    finally:
        system.stop()


def _completed_runs(up: Up, routine: str, source: str) -> list[dict[str, Any]]:
    listed = up.cli("runs", "list", "--routine", routine, "--status", "completed", "--json")
    assert listed.returncode == 0, listed.stderr
    runs: list[dict[str, Any]] = json.loads(listed.stdout)
    return [r for r in runs if r.get("source") == source]


async def test_a_killed_nats_server_is_restarted_and_work_goes_on(up: Up, tmp_path: Path) -> None:
    up.start("--web-port", "0")
    await up.ready()
    created = up.cli("routine", "create", str(copy_example("hello", tmp_path)), "--name", "hello")
    assert created.returncode == 0, created.stderr
    nats_pid = up.part_pid("nats-server")
    nats_url = up.state()["nats_url"]

    os.kill(nats_pid, signal.SIGKILL)

    await eventually(lambda: _async(not pid_alive(nats_pid)), timeout=10, what="nats-server to die")
    await eventually(
        lambda: _async("nats-server died (signal SIGKILL); restarting it now" in up.output()),
        timeout=20,
        what="up to report the restart",
    )
    assert str(up.home / "logs" / "nats-server.log") in up.output()
    state = await up.ready()
    assert state["nats_url"] == nats_url
    nats_part = next(p for p in state["parts"] if p["name"] == "nats-server")
    assert nats_part["restarts"] == 1
    assert nats_part["pid"] != nats_pid
    assert nats_part["last_exit"] == "signal SIGKILL"

    # Nothing done to `up`: a manual run completes through every service...
    run = up.cli("run", "hello", "--input", "steps=1", "--wait", "--timeout", "90")
    assert "status: completed" in run.stdout, f"{run.stdout}\n{run.stderr}\n{up.logs()}"
    # ...and a routine registered after the restart fires on its own (the ticker's registry
    # watch and the dispatcher's and runner's consumers resumed).
    tick = write_routine(tmp_path / "tick", EVERY_SECOND)
    created = up.cli("routine", "create", str(tick), "--name", "tick")
    assert created.returncode == 0, created.stderr
    await eventually(
        lambda: _async(_completed_runs(up, "tick", "trigger")),
        timeout=60,
        interval=1,
        what="a scheduled run of the routine registered after the restart",
    )
    assert up.process is not None
    assert up.process.poll() is None, up.output()


async def test_status_reports_a_killed_service_as_restarting_then_ready(up: Up) -> None:
    up.start("--web-port", str(free_port()))
    ready = await up.ready()
    assert {p["name"] for p in ready["parts"]} >= {"nats-server", "dispatcher", "runner", "web"}
    first = up.cli("status", "--json")
    assert first.returncode == 0, first.stdout + first.stderr
    described = json.loads(first.stdout)
    assert described["database"].startswith("sqlite:///")
    assert described["home"] == str(up.home.resolve())
    assert described["versions"]["nats-server"].startswith("v")
    dispatcher_pid = up.part_pid("dispatcher")

    os.kill(dispatcher_pid, signal.SIGKILL)

    seen: list[str] = []

    async def restarting() -> dict[str, Any] | None:
        status = collect_status(up.settings())
        part = next(p for p in status["parts"] if p["name"] == "dispatcher")
        seen.append(part["state"])
        return status if part["state"] == "restarting" else None

    status = await eventually(restarting, timeout=20, interval=0.05, what="dispatcher restarting")
    assert not everything_ready(status)
    assert not pid_alive(dispatcher_pid)

    after = await up.ready()
    dispatcher = next(p for p in after["parts"] if p["name"] == "dispatcher")
    assert dispatcher["restarts"] == 1
    assert dispatcher["pid"] != dispatcher_pid
    assert dispatcher["last_exit"] == "signal SIGKILL"
    assert "dispatcher died (signal SIGKILL)" in up.output()
    table = up.cli("status")
    assert table.returncode == 0, table.stdout + table.stderr
    assert "dispatcher" in table.stdout
    assert "ready" in table.stdout


async def test_status_shows_the_stream_and_each_bucket_with_messages_and_bytes(
    up: Up, tmp_path: Path
) -> None:
    up.start("--web-port", "0")
    await up.ready()
    created = up.cli("routine", "create", str(copy_example("hello", tmp_path)), "--name", "hello")
    assert created.returncode == 0, created.stderr
    run = up.cli("run", "hello", "--input", "steps=1", "--wait", "--timeout", "90")
    assert "status: completed" in run.stdout, f"{run.stdout}\n{run.stderr}\n{up.logs()}"

    described = json.loads(up.cli("status", "--json").stdout)
    streams = {s["name"]: s for s in described["streams"]}
    limits = {r.stream: r.settings["max_bytes"] for r in requirements(up.settings())}
    assert set(streams) >= set(limits)
    for name, limit in limits.items():
        assert streams[name]["max_bytes"] == limit, name
    # The run was submitted, requested and completed on the stream; its definition and code
    # are in the registry and the bundle store.
    assert streams["MAINSPRING"]["messages"] >= 3
    assert streams["MAINSPRING"]["bytes"] > 0
    assert streams["KV_routines"]["messages"] == 1
    # Its progress went to the progress stream.
    assert streams["MAINSPRING_PROGRESS"]["messages"] >= 1
    assert streams["OBJ_bundles"]["bytes"] > 0

    table = up.cli("status")
    assert table.returncode == 0, table.stdout + table.stderr
    rows = table.stdout.splitlines()
    for name, limit in limits.items():
        [shown] = [row for row in rows if row.startswith(f"{name} ")]
        assert " messages, " in shown
        assert shown.endswith(f" of {format_bytes(limit)}"), shown


async def test_down_from_a_second_process_stops_everything_and_frees_the_port(up: Up) -> None:
    up.start("--web-port", "0")
    await up.ready()
    state = up.state()
    pids = [int(p["pid"]) for p in state["parts"]]
    nats_port = int(state["nats_url"].rsplit(":", 1)[1])
    assert not port_is_free(nats_port)

    down = up.cli("down")

    assert down.returncode == 0, down.stdout + down.stderr
    assert "stopped" in down.stdout
    assert "killed" not in down.stdout
    assert up.process is not None
    assert up.process.wait(timeout=10) == 0, up.output()
    _wait_gone(pids, 10)
    assert port_is_free(nats_port)
    assert read_up_state(up.settings()) is None
    again = up.cli("down")
    assert again.returncode == 1
    assert "not up" in again.stderr


async def test_up_detach_then_logs_and_down(up: Up) -> None:
    started = up.cli("up", "--detach", "--web-port", "0", timeout=120)

    assert started.returncode == 0, started.stdout + started.stderr
    assert "in the background" in started.stdout
    state = up.state()
    up_pid = int(state["pid"])
    assert os.getsid(up_pid) == up_pid  # its own session: closing the terminal does not stop it
    await up.ready()
    up_log = up.home / "logs" / "up.log"
    assert "mainspring is up" in up_log.read_text()
    second = up.cli("up", "--detach")
    assert second.returncode == 2
    assert "already up" in second.stderr

    logs = up.cli("logs", "nats-server")
    assert logs.returncode == 0, logs.stderr
    assert "Server is ready" in logs.stdout, logs.stdout + logs.stderr
    every = up.cli("logs", "--lines", "5")
    assert "dispatcher" in every.stdout
    assert "nats-server" in every.stdout
    unknown = up.cli("logs", "nope")
    assert unknown.returncode == 2
    assert "choose one of" in unknown.stderr

    pids = [up_pid, *(int(p["pid"]) for p in state["parts"])]
    nats_port = int(state["nats_url"].rsplit(":", 1)[1])
    down = up.cli("down")

    assert down.returncode == 0, down.stdout + down.stderr
    _wait_gone(pids, 10)
    assert port_is_free(nats_port)
    assert "mainspring: stopped" in up_log.read_text()


async def _async(value: Any) -> Any:
    return value


async def test_up_gives_up_on_a_bus_that_keeps_dying_and_exits_non_zero(up: Up) -> None:
    up.start("--web-port", "0")
    await up.ready()
    service_pids = [int(p["pid"]) for p in up.state()["parts"] if p["name"] != "nats-server"]
    assert up.process is not None

    kills = 0
    while up.process.poll() is None and kills < 10:
        nats_pid = up.part_pid("nats-server")
        os.kill(nats_pid, signal.SIGKILL)
        kills += 1

        async def restarted_or_given_up(killed: int = nats_pid) -> bool:
            assert up.process is not None
            if up.process.poll() is not None:
                return True
            return not pid_alive(killed) and up.part_pid("nats-server") != killed

        await eventually(
            restarted_or_given_up, timeout=30, what="a restart of nats-server, or up giving up"
        )

    assert up.process.wait(timeout=60) == 1, up.output()
    assert kills == 6  # five restarts, then the sixth death within a minute is one too many
    output = up.output()
    assert output.count("nats-server died (signal SIGKILL); restarting it") == 5
    assert "gave up on nats-server: it died 6 times within 60s (last: signal SIGKILL)" in output
    assert "the bus cannot be kept up" in output
    _wait_gone(service_pids, 20)


def test_up_refuses_a_nats_port_in_use(up: Up) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = up.cli("up", "--nats-port", str(port), "--web-port", "0", timeout=60)
        detached = up.cli("up", "--detach", "--nats-port", str(port), "--web-port", "0")
    assert result.returncode == 1
    assert f"port {port} is taken" in result.stderr
    assert detached.returncode == 1
    assert "did not start" in detached.stderr
    assert f"port {port} is taken" in detached.stderr
    assert len(detached.stderr.strip().splitlines()) == 1


async def test_a_killed_up_takes_its_parts_with_it(up: Up) -> None:
    up.start("--web-port", "0")
    await up.ready()
    state = up.state()
    pids = [int(p["pid"]) for p in state["parts"]]
    nats_port = int(state["nats_url"].rsplit(":", 1)[1])
    assert up.process is not None

    up.process.kill()

    assert up.process.wait(timeout=10) == -signal.SIGKILL
    _wait_gone(pids, 20)
    assert port_is_free(nats_port)
    status = up.cli("status")
    assert status.returncode == 1
    assert "not up" in status.stdout
