"""Supervising one run's child process: feed it, read its pipe, enforce limits, stop it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from mainspring.messages import RequestRun
from services.runner.core import Outcome, outcome_of
from services.runner.pool import Worker, start_worker

OnMessage = Callable[[dict[str, Any]], Awaitable[None]]


def child_pids(pid: int) -> list[int]:
    """Direct children of a process, from every one of its threads."""
    children: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return children
    for task in tasks:
        try:
            children.extend(int(c) for c in (task / "children").read_text().split())
        except (OSError, ValueError):
            continue
    return children


def tree_rss_bytes(pid: int) -> int:
    """Resident memory of a process and all its descendants (a routine may fork workers)."""
    total, frontier, seen = 0, [pid], set()
    while frontier:
        current = frontier.pop()
        if current in seen:
            continue
        seen.add(current)
        total += rss_bytes(current)
        frontier.extend(child_pids(current))
    return total


def rss_bytes(pid: int) -> int:
    """Resident memory of a process (0 once it is gone)."""
    try:
        with Path(f"/proc/{pid}/status").open() as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return 0
    return 0


class ChildRun:
    """One execution attempt of a run in its own process."""

    def __init__(
        self, request: RequestRun, bundle_dir: Path, log_path: Path, env: dict[str, str]
    ) -> None:
        self.request = request
        self.bundle_dir = bundle_dir
        self.log_path = log_path
        self.env = env
        self.process: asyncio.subprocess.Process | None = None
        self.cancelled = False
        self.memory_exceeded = False
        self.timed_out_after: float | None = None
        self.artifacts: list[dict[str, Any]] = []
        # Instance state handed to the run, and what it ended with (None: unchanged).
        self.state: dict[str, Any] = {}
        self.final_state: dict[str, Any] | None = None

    async def run(
        self, on_message: OnMessage, memory_poll_s: float, worker: Worker | None = None
    ) -> Outcome:
        """Execute to the end (in a warm worker when given one) and say how it ended."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        if worker is None:
            worker = await start_worker(self.env)
        self.process = worker.process
        read_fd = worker.control_fd
        if self.cancelled:
            # Cancelled while the worker was being handed over: it never starts the routine.
            self._signal(signal.SIGKILL)
        assert self.process.stdin is not None
        job = {
            "bundle_dir": str(self.bundle_dir),
            "log_path": str(self.log_path),
            "request": json.loads(self.request.model_dump_json()),
            "state": self.state,
        }
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.process.stdin.write(json.dumps(job).encode() + b"\n")
            await self.process.stdin.drain()
            self.process.stdin.close()
        result: dict[str, Any] | None = None

        async def read_pipe() -> None:
            nonlocal result
            loop = asyncio.get_running_loop()
            reader = asyncio.StreamReader(limit=16 * 1024 * 1024)
            transport, _ = await loop.connect_read_pipe(
                lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(read_fd, "rb")
            )
            try:
                async for line in reader:
                    try:
                        message = json.loads(line)
                    except ValueError:
                        continue
                    if message.get("type") == "result":
                        result = message
                        self.final_state = message.get("state")
                    elif message.get("type") == "artifact":
                        self.artifacts.append(message["artifact"])
                    await on_message(message)
            finally:
                transport.close()

        watchers = [
            asyncio.create_task(read_pipe()),
            asyncio.create_task(self._limits(memory_poll_s)),
        ]
        await self.process.wait()
        # Whatever the routine forked must not outlive its run.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(watchers[0], timeout=5)
        for task in watchers:
            task.cancel()
        return outcome_of(
            result,
            self.process.returncode or 0,
            cancelled=self.cancelled,
            timed_out_after=self.timed_out_after,
            memory_exceeded=self.memory_exceeded,
            log_tail=self.log_tail(),
        )

    async def _limits(self, poll_s: float) -> None:
        assert self.process is not None
        limit = self.request.memory_limit
        timeout = self.request.timeout_s
        started = time.monotonic()
        while self.process.returncode is None:
            if limit and tree_rss_bytes(self.process.pid) > limit:
                self.memory_exceeded = True
                self._signal(signal.SIGKILL)
                return
            if timeout and time.monotonic() - started > timeout:
                self.timed_out_after = timeout
                await self.stop(grace_s=2.0)
                return
            await asyncio.sleep(poll_s)

    def _signal(self, signum: int) -> None:
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                # The child leads its own session: signal the group so its children go too.
                os.killpg(self.process.pid, signum)

    async def stop(self, grace_s: float) -> None:
        """SIGTERM, then SIGKILL after the grace period."""
        self._signal(signal.SIGTERM)
        if self.process is None:
            return  # not started yet: run() sees the cancel before it hands over the job
        try:
            await asyncio.wait_for(self.process.wait(), timeout=grace_s)
        except TimeoutError:
            self._signal(signal.SIGKILL)

    async def cancel(self, grace_s: float) -> None:
        """Stop because a user asked to."""
        self.cancelled = True
        await self.stop(grace_s)

    def log_tail(self, lines: int = 20) -> str:
        """The last lines the routine printed."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])
