"""What runs under `mainspring up`, checked live: for `mainspring status` and `mainspring down`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

from mainspring.base.settings import ConfigError, Settings
from mainspring.storage.capacity import CapacityBoard, RunnerCapacity

READY = "ready"


class NotUp(RuntimeError):
    """No `mainspring up` runs in this home."""


def pid_alive(pid: int | None) -> bool:
    """Does this process exist and has it not ended (a zombie counts as ended)?"""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        # The third field of /proc/PID/stat is the state; Z is a zombie waiting to be reaped.
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] != "Z"


def part_state(
    *,
    alive: bool,
    connected: bool,
    restarts: int,
    gave_up: bool,
    up_running: bool,
    bus_ready: bool = True,
) -> str:
    """A few words for a part: ready, starting, restarting, waiting for nats, gave up or down."""
    if gave_up:
        return "gave up"
    if not up_running:
        return "down"
    if alive and connected:
        return READY
    if alive and not bus_ready:
        # Its client keeps reconnecting; it is fine the moment nats-server is back.
        return "waiting for nats"
    if restarts > 0 or not alive:
        # Dead but supervised: `up` restarts it on its next round.
        return "restarting"
    return "starting"


def pid_of_connection_name(name: str) -> int | None:
    """The pid in a service's connection name (`runner@host:1234`), if it has one."""
    _, sep, tail = name.rpartition(":")
    return int(tail) if sep and tail.isdigit() else None


def http_get(url: str, timeout_s: float = 2.0) -> bytes | None:
    """The body of a 200 answer, or None when nothing (good) answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            body: bytes = response.read()
            return body if response.status == 200 else None
    except (OSError, urllib.error.URLError, ValueError):
        return None


def connected_pids(monitor_url: str) -> set[int]:
    """Pids of the processes connected to nats-server, from its /connz monitoring page."""
    body = http_get(f"{monitor_url}/connz?limit=4096")
    if body is None:
        return set()
    connections = json.loads(body).get("connections") or []
    pids = (pid_of_connection_name(str(c.get("name") or "")) for c in connections)
    return {pid for pid in pids if pid is not None}


def stream_usage(jsz: dict[str, Any]) -> list[dict[str, Any]]:
    """Messages and bytes held by each JetStream stream (the bus and every bucket) and its
    byte limit, from nats-server's /jsz page, sorted by name."""
    found = []
    for account in jsz.get("account_details") or []:
        for stream in account.get("stream_detail") or []:
            state = stream.get("state") or {}
            limit = int((stream.get("config") or {}).get("max_bytes") or -1)
            found.append(
                {
                    "name": str(stream.get("name")),
                    "messages": int(state.get("messages") or 0),
                    "bytes": int(state.get("bytes") or 0),
                    "max_bytes": limit if limit > 0 else None,
                }
            )
    return sorted(found, key=lambda s: s["name"])


def read_stream_usage(monitor_url: str) -> list[dict[str, Any]]:
    """stream_usage of the running nats-server (empty when its monitor does not answer)."""
    body = http_get(f"{monitor_url}/jsz?accounts=true&streams=true&config=true")
    return stream_usage(json.loads(body)) if body is not None else []


def read_up_state(settings: Settings) -> dict[str, Any] | None:
    """What `up` last wrote in the home (None when it wrote nothing or removed it)."""
    state: dict[str, Any] | None = settings.up_state()
    return state


def collect_status(settings: Settings, now: float | None = None) -> dict[str, Any]:
    """The state file of `up` joined with live checks of every part it lists."""
    now = time.time() if now is None else now
    home = settings.home.resolve()
    state = read_up_state(settings)
    if state is None:
        return {"up": False, "home": str(home), "state": "not up", "parts": []}
    up_pid = int(state.get("pid") or 0)
    up_running = pid_alive(up_pid) and state.get("state") != "stopping"
    monitor_url = str(state.get("monitor_url") or "")
    connected = connected_pids(monitor_url) if up_running else set()
    bus_ready = up_running and http_get(f"{monitor_url}/healthz") is not None
    parts = []
    for part in state.get("parts") or []:
        if not isinstance(part, dict):
            continue
        pid = part.get("pid")
        alive = pid_alive(pid)
        name = str(part.get("name"))
        if name == "nats-server":
            reachable = alive and bus_ready
        elif name == "web":
            reachable = alive and http_get(f"{state.get('web_url')}/") is not None
        else:
            reachable = alive and pid in connected
        started = float(part.get("started_at") or 0)
        parts.append(
            {
                **part,
                "state": part_state(
                    alive=alive,
                    connected=reachable,
                    restarts=int(part.get("restarts") or 0),
                    gave_up=bool(part.get("gave_up")),
                    up_running=up_running,
                    bus_ready=bus_ready,
                ),
                "uptime_s": round(now - started, 1) if alive and started else None,
            }
        )
    started_at = float(state.get("started_at") or now)
    return {
        **state,
        "up": up_running,
        "state": state.get("state") if up_running else "not up (stale state file)",
        "uptime_s": round(now - started_at, 1) if up_running else None,
        "parts": parts,
        "streams": read_stream_usage(monitor_url) if up_running else [],
    }


def runner_rows(runners: list[RunnerCapacity], now: datetime) -> list[dict[str, Any]]:
    """One row per live runner: who and where, busy/total slots, memory, last refresh age."""
    return [
        {
            "instance": runner.instance,
            "host": runner.host,
            "version": runner.version,
            "busy": runner.busy,
            "slots": runner.slots,
            "memory_available": runner.memory_available,
            "memory_total": runner.memory_total,
            "isolation": list(runner.isolation),
            "refreshed_s": round(max(0.0, (now - runner.refreshed_at).total_seconds()), 1),
        }
        for runner in runners
    ]


async def _ignore(_error: Exception) -> None:
    return None


async def _live_runners(settings: Settings) -> list[RunnerCapacity]:
    from mainspring.runtime.bus import connect_with

    # One try, quietly: status says in one line that the bus did not answer.
    nc = await connect_with(
        settings, "mainspring-status", max_reconnect_attempts=1, error_cb=_ignore
    )
    try:
        return await (await CapacityBoard.open(nc.jetstream())).live()
    finally:
        await nc.close()


async def _live_runners_within(settings: Settings, timeout_s: float) -> list[RunnerCapacity]:
    try:
        return await asyncio.wait_for(_live_runners(settings), timeout_s)
    except TimeoutError:
        raise TimeoutError(f"the bus did not answer within {timeout_s:g}s") from None


def runner_status(
    settings: Settings, now: datetime, *, up_running: bool, timeout_s: float = 5.0
) -> dict[str, Any]:
    """The live runners from the bus (`runners`), or why they could not be read
    (`runners_problem`); nothing where no bus should answer: no `up` running here and no
    MAINSPRING_NATS_URL."""
    if not up_running and not settings.nats_url:
        return {}
    try:
        settings.resolved_nats_url()
    except ConfigError:
        return {}
    try:
        # Its own thread gets its own event loop: callable from synchronous code.
        with ThreadPoolExecutor(max_workers=1) as pool:
            runners = pool.submit(asyncio.run, _live_runners_within(settings, timeout_s)).result()
    except Exception as exc:  # noqa: BLE001 - status reports what it cannot read, in one line
        return {"runners": [], "runners_problem": f"runners unknown: {exc}"}
    return {"runners": runner_rows(runners, now)}


def everything_ready(status: dict[str, Any]) -> bool:
    """Is the system up with every part ready?"""
    parts = status.get("parts") or []
    return bool(status.get("up")) and all(p.get("state") == READY for p in parts)


def wait_until(condition: Callable[[], bool], timeout_s: float, interval_s: float = 0.1) -> bool:
    """Poll condition until it holds (True) or timeout_s passed (False)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval_s)
    return True


def stop_system(settings: Settings, timeout_s: float = 30.0) -> bool:
    """Ask the `up` of this home to stop (SIGTERM); kill it and its parts after timeout_s.

    Returns True when it had to be forced.
    """
    state = read_up_state(settings)
    up_pid = int(state.get("pid") or 0) if state else 0
    if state is None or not pid_alive(up_pid):
        raise NotUp(
            f"mainspring is not up in {settings.home.resolve()}: nothing to stop "
            "(set MAINSPRING_HOME to the home `mainspring up` used)"
        )
    os.kill(up_pid, signal.SIGTERM)
    if wait_until(lambda: not pid_alive(up_pid), timeout_s):
        return False
    for part in state.get("parts") or []:
        pid = part.get("pid") if isinstance(part, dict) else None
        if isinstance(pid, int) and pid_alive(pid):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
    if state.get("pgid") == up_pid:
        # A detached `up` leads its own process group: this also ends what its parts forked.
        with contextlib.suppress(OSError):
            os.killpg(up_pid, signal.SIGKILL)
    with contextlib.suppress(OSError):
        os.kill(up_pid, signal.SIGKILL)
    wait_until(lambda: not pid_alive(up_pid), 5.0)
    with contextlib.suppress(OSError):
        settings.up_state_path().unlink()
    return True
