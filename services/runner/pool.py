"""Warm workers: child processes started ahead of time so a run starts in milliseconds.

Each worker has already paid for the interpreter start and the heavy imports (mainspring,
pyarrow) and waits for one request on stdin. It serves exactly one run and exits, so every
run still gets a fresh process (isolation, memory returned to the OS); the pool refills
in the background.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from dataclasses import dataclass

WORKER_MODULE = "services.runner.child"


@dataclass
class Worker:
    """One started child process and the read end of its control pipe."""

    process: asyncio.subprocess.Process
    control_fd: int

    def alive(self) -> bool:
        """Still waiting for its request?"""
        return self.process.returncode is None

    async def discard(self) -> None:
        """Stop an unused worker and reap it (it leads its own session: signal the group)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        if self.process.stdin is not None:
            self.process.stdin.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.process.wait(), 5.0)
        with contextlib.suppress(OSError):
            os.close(self.control_fd)


async def start_worker(env: dict[str, str]) -> Worker:
    """Start one worker process that waits for a request on stdin."""
    read_fd, write_fd = os.pipe()
    os.set_inheritable(read_fd, False)
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            WORKER_MODULE,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            pass_fds=(write_fd,),
            env={**os.environ, **env, "MAINSPRING_CONTROL_FD": str(write_fd)},
            # Its own process group: limits and cancellation signal the whole tree.
            start_new_session=True,
        )
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)
    return Worker(process, read_fd)


class WarmPool:
    """Keeps `size` idle workers ready; take() hands one out and starts a replacement."""

    def __init__(self, size: int, env: dict[str, str]) -> None:
        self.size = max(0, size)
        self.env = env
        self._idle: list[Worker] = []
        self._refilling: set[asyncio.Task[None]] = set()
        self._closed = False

    async def fill(self) -> None:
        """Start workers until `size` are idle."""
        while not self._closed and len(self._idle) + len(self._refilling) < self.size:
            task = asyncio.create_task(self._add_one())
            self._refilling.add(task)
            task.add_done_callback(self._refilling.discard)

    async def _add_one(self) -> None:
        worker = await start_worker(self.env)
        if self._closed:
            await worker.discard()
        else:
            self._idle.append(worker)

    async def take(self) -> Worker:
        """A ready worker (a cold one when none is idle yet); the pool refills behind it."""
        worker: Worker | None = None
        while self._idle and worker is None:
            candidate = self._idle.pop(0)
            if candidate.alive():
                worker = candidate
            else:
                await candidate.discard()
        if worker is None:
            worker = await start_worker(self.env)
        await self.fill()
        return worker

    def idle_count(self) -> int:
        """Workers ready right now."""
        return sum(1 for w in self._idle if w.alive())

    async def close(self) -> None:
        """Stop idle workers and refills (running runs are not touched)."""
        self._closed = True
        for task in list(self._refilling):
            task.cancel()
        idle, self._idle = self._idle, []
        await asyncio.gather(*(worker.discard() for worker in idle))
