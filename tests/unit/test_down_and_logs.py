"""`mainspring down` against real processes, and `mainspring logs --follow`, without a bus."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from mainspring.apps.status import NotUp, pid_alive, stop_system
from mainspring.base.settings import Settings

IGNORES_SIGTERM = (
    "import signal, sys, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "print('ready', flush=True)\n"
    "time.sleep(600)\n"
)
STOPS_ON_SIGTERM = "import sys, time\nprint('ready', flush=True)\ntime.sleep(600)\n"


def _process(source: str) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-c", source], stdout=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "ready"
    return process


def _write_state(home: Path, up: subprocess.Popen[str], part: subprocess.Popen[str]) -> Settings:
    home.mkdir(parents=True, exist_ok=True)
    state = {
        "state": "up",
        "pid": up.pid,
        # Not the fake up's own group: down must not signal the test's process group.
        "pgid": os.getpgid(up.pid),
        "parts": [{"name": "dispatcher", "pid": part.pid}],
    }
    (home / "up.json").write_text(json.dumps(state))
    return Settings(home=home)


def test_down_asks_first(tmp_path: Path) -> None:
    up, part = _process(STOPS_ON_SIGTERM), _process(STOPS_ON_SIGTERM)
    try:
        settings = _write_state(tmp_path / "home", up, part)

        assert stop_system(settings, timeout_s=20) is False

        assert up.wait(timeout=5) == -signal.SIGTERM
        assert pid_alive(part.pid)  # stopping its parts is the real up's job when asked nicely
    finally:
        part.kill()
        part.wait()


def test_down_kills_an_up_that_does_not_stop_and_its_parts(tmp_path: Path) -> None:
    up, part = _process(IGNORES_SIGTERM), _process(IGNORES_SIGTERM)
    settings = _write_state(tmp_path / "home", up, part)

    assert stop_system(settings, timeout_s=0.5) is True

    assert up.wait(timeout=5) == -signal.SIGKILL
    assert part.wait(timeout=5) == -signal.SIGKILL
    assert not settings.up_state_path().exists()


def test_down_without_up_says_so(tmp_path: Path) -> None:
    with pytest.raises(NotUp, match="not up in"):
        stop_system(Settings(home=tmp_path), timeout_s=1)


def test_logs_follow_prints_lines_as_they_are_written(tmp_path: Path) -> None:
    logs = tmp_path / "home" / "logs"
    logs.mkdir(parents=True)
    log = logs / "dispatcher.log"
    log.write_text("older line\nlast line\n")
    follow = subprocess.Popen(
        [sys.executable, "-m", "mainspring", "logs", "dispatcher", "--follow", "-n", "1"],
        env={**os.environ, "MAINSPRING_HOME": str(tmp_path / "home")},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert follow.stdout is not None
        assert follow.stdout.readline() == "last line\n"
        with log.open("a") as handle:
            handle.write("written while following\n")
        assert follow.stdout.readline() == "written while following\n"
    finally:
        follow.send_signal(signal.SIGINT)
        follow.wait(timeout=10)
