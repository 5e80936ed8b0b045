"""`mainspring up`'s supervision decisions, the status words and the log reading."""

from __future__ import annotations

import io
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from mainspring.apps.service_logs import LogFollower, NoSuchLog, find_log, last_lines
from mainspring.apps.status import part_state, pid_alive, pid_of_connection_name
from mainspring.apps.up import Child, RestartPolicy, System, describe_exit, restart_delay
from mainspring.base.settings import Settings

POLICY = RestartPolicy(max_restarts=3, window_s=60, first_delay_s=0.5, max_delay_s=1.0)


@pytest.mark.parametrize(
    ("recent", "expected"),
    [
        ([], 0.0),  # the first death restarts at once
        ([0.0], 0.5),
        ([0.0, 1.0], 1.0),
        ([0.0, 1.0, 2.0], None),  # a fourth death within the window: give up
        ([-100.0, -90.0, 2.0], 0.5),  # restarts before the window do not count
    ],
)
def test_restart_delay_backs_off_then_gives_up(recent: list[float], expected: float | None) -> None:
    assert restart_delay(recent, now=10.0, policy=POLICY) == expected


def test_restart_policy_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="max_restarts"):
        RestartPolicy(max_restarts=0)
    with pytest.raises(ValueError, match="first_delay_s"):
        RestartPolicy(first_delay_s=5, max_delay_s=1)


@pytest.mark.parametrize(
    ("returncode", "words"),
    [
        (1, "exit code 1"),
        (0, "exit code 0"),
        (-signal.SIGKILL, "signal SIGKILL"),
        (-99, "signal 99"),
    ],
)
def test_describe_exit(returncode: int, words: str) -> None:
    assert describe_exit(returncode) == words


@pytest.mark.parametrize(
    ("alive", "connected", "restarts", "gave_up", "up_running", "bus_ready", "state"),
    [
        (True, True, 0, False, True, True, "ready"),
        (True, False, 0, False, True, True, "starting"),
        (True, False, 2, False, True, True, "restarting"),
        (False, False, 0, False, True, True, "restarting"),
        (True, True, 1, False, True, True, "ready"),
        (True, False, 0, False, True, False, "waiting for nats"),
        (False, False, 0, False, True, False, "restarting"),
        (False, False, 6, True, True, True, "gave up"),
        (True, True, 0, False, False, True, "down"),
    ],
)
def test_part_state(
    alive: bool,
    connected: bool,
    restarts: int,
    gave_up: bool,
    up_running: bool,
    bus_ready: bool,
    state: str,
) -> None:
    assert (
        part_state(
            alive=alive,
            connected=connected,
            restarts=restarts,
            gave_up=gave_up,
            up_running=up_running,
            bus_ready=bus_ready,
        )
        == state
    )


def test_pid_of_connection_name() -> None:
    assert pid_of_connection_name("runner@host.local:4242") == 4242
    assert pid_of_connection_name("mainspring-client") is None


def test_pid_alive_sees_a_process_end() -> None:
    import subprocess

    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    assert not pid_alive(process.pid)
    assert pid_alive(None) is False


def _dying_child(tmp_path: Path, name: str, code: int) -> Child:
    child = Child(
        name, [sys.executable, "-c", f"raise SystemExit({code})"], {}, tmp_path / f"{name}.log"
    )
    child.start()
    assert child.process is not None
    child.process.wait()
    return child


def _supervise_until(system: System, done: Callable[[], bool], timeout: float = 30.0) -> None:
    """Run supervision rounds, each after every (immediately dying) part has exited."""
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        system.supervise_once()
        for part in system.parts:
            if part.process is not None:
                part.process.wait(timeout=30)
    assert done(), "supervision did not reach the expected state"


def test_a_service_that_keeps_dying_is_given_up_with_the_reason(tmp_path: Path) -> None:
    echo = io.StringIO()
    system = System(
        Settings(home=tmp_path),
        echo=echo,
        policy=RestartPolicy(max_restarts=2, window_s=60, first_delay_s=0, max_delay_s=0),
    )
    child = _dying_child(tmp_path, "dispatcher", 3)
    system.children.append(child)

    _supervise_until(system, lambda: child.gave_up is not None)

    assert child.restart_count == 2
    assert system.failure is None  # a service lost is reported, not fatal
    out = echo.getvalue()
    assert out.count("dispatcher died (exit code 3); restarting it") == 2
    assert "gave up on dispatcher: it died 3 times within 60s (last: exit code 3)" in out
    assert str(child.log_path) in out


def test_a_bus_that_keeps_dying_fails_the_system(tmp_path: Path) -> None:
    echo = io.StringIO()
    system = System(
        Settings(home=tmp_path),
        echo=echo,
        policy=RestartPolicy(max_restarts=1, window_s=60, first_delay_s=0, max_delay_s=0),
    )
    system.nats = _dying_child(tmp_path, "nats-server", 1)

    _supervise_until(system, lambda: system.failure is not None)

    assert system.failure is not None
    assert "the bus cannot be kept up" in system.failure
    assert f"restarting it now on port {system.nats_port} with its store" in echo.getvalue()


def test_find_log_accepts_dashes_and_names_the_choices(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "dataset_watcher.log").write_text("a\n")
    (logs / "nats-server.log").write_text("b\n")
    assert find_log(tmp_path, "dataset-watcher").name == "dataset_watcher.log"
    assert find_log(tmp_path, "nats-server").name == "nats-server.log"
    with pytest.raises(NoSuchLog, match="choose one of dataset_watcher, nats-server"):
        find_log(tmp_path, "dispatcher")


def test_last_lines_and_follower_hand_out_whole_new_lines(tmp_path: Path) -> None:
    log = tmp_path / "runner.log"
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    assert last_lines(log, 2) == ["line 98", "line 99"]
    assert last_lines(log, 2, end=len("line 0\nline 1\nline 2\n") + 3) == ["line 1", "line 2"]

    follower = LogFollower([log])
    follower.skip_to_end()
    assert list(follower.new_lines()) == []
    with log.open("a") as handle:
        handle.write("new 1\nhalf")
    assert [line for _, line in follower.new_lines()] == ["new 1"]
    with log.open("a") as handle:
        handle.write(" done\n")
    assert [line for _, line in follower.new_lines()] == ["half done"]
    log.write_text("after truncation\n")
    assert [line for _, line in follower.new_lines()] == ["after truncation"]


def test_no_part_is_given_a_port_already_promised_to_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The OS hands out any port nobody listens on yet, the web page's among them: it
    # binds only after the services start, so a service once took its port and died.
    offered = iter([8765, 4222, 8765, 5000, 5000, 5001])
    monkeypatch.setattr("mainspring.apps.up.free_port", lambda: next(offered))

    system = System(Settings(home=tmp_path), nats_port=4222, web_port=8765)

    assert system.monitor_port == 5000
    assert system.unpromised_port() == 5001
