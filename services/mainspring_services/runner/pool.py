"""Worker processes on the runner's side: start, hand out, take back, recycle, fork.

A worker is an interpreter that has paid for its start and the heavy imports and serves
runs one after another (`mainspring_services.runner.child`). It is pinned to the code-bundle digest
of its first run for its life: modules are keyed by file name, so two bundles that both
ship `routine.py` would collide in one interpreter. Idle workers wait per digest; the
least recently used are stopped when more than `max_idle` wait. After each run the pure
`core.recycle_reason` decides whether the worker may serve again.

For `isolation = "process"` a fork server (`mainspring_services.runner.fork_server`) that imported the
heavy modules before any thread existed forks a fresh child per run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
from collections import OrderedDict
from typing import Any

from mainspring.runtime import metrics
from mainspring_services.runner import core
from mainspring_services.runner.procfs import live_descendants, tree_rss_bytes
from mainspring_services.runner.worker_user import worker_environment

WORKER_MODULE = "mainspring_services.runner.child"
FORK_SERVER_MODULE = "mainspring_services.runner.fork_server"
# Importing pyarrow starts jemalloc's background purge thread; a fork server must hold no
# thread when it forks, so the server (and its children) run jemalloc without it.
FORK_SERVER_ENV = {"JE_ARROW_MALLOC_CONF": "background_thread:false"}

log = logging.getLogger("mainspring.runner")


class WorkerLost(RuntimeError):
    """A worker ended before it was ready for a run."""


class Worker:
    """A process serving runs: job lines in, control lines out, its exit code once it ends."""

    def __init__(
        self,
        pid: int,
        jobs: asyncio.WriteTransport,
        control: asyncio.StreamReader,
        control_transport: asyncio.ReadTransport,
        exited: asyncio.Future[int],
    ) -> None:
        self.pid = pid
        self._jobs = jobs
        self._control = control
        self._control_transport = control_transport
        self.exited = exited
        self.digest: str | None = None
        self.runs_served = 0
        # Resident memory once ready (imports paid): growth above it is the runs' doing.
        self.baseline_rss = 0
        self.ready = False

    def alive(self) -> bool:
        """Has the process not ended yet?"""
        return not self.exited.done()

    def returncode(self) -> int | None:
        """Exit code (negative: killed by that signal) once it ended."""
        return self.exited.result() if self.exited.done() else None

    async def wait_ready(self) -> None:
        """Wait for the worker's `ready` line (its imports are done) and note its baseline."""
        if self.ready:
            # Measured once, after the imports: growth over it adds up across the runs the
            # worker serves, so one that keeps a little memory each run is recycled in time.
            return
        while not self.ready:
            message = await self.read_message()
            if message is None:
                raise WorkerLost(f"worker {self.pid} ended before it was ready")
            self.ready = message.get("type") == "ready"
        self.baseline_rss = tree_rss_bytes(self.pid)

    async def read_message(self) -> dict[str, Any] | None:
        """The next control line as a dict; None once the worker closed its pipe (it ended)."""
        while True:
            line = await self._control.readline()
            if not line:
                return None
            with contextlib.suppress(ValueError):
                message = json.loads(line)
                if isinstance(message, dict):
                    return message

    def send_job(self, job: dict[str, Any]) -> None:
        """Hand the worker its next run."""
        self._jobs.write(json.dumps(job).encode() + b"\n")

    def kill(self) -> None:
        """SIGKILL the worker and everything in its process group (what its runs forked)."""
        if not self.alive():
            return
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            # Not yet the leader of its own group (just forked): the process alone.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(self.pid, signal.SIGKILL)

    def terminate(self) -> None:
        """SIGTERM the worker's process group (a routine may clean up before the SIGKILL)."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGTERM)

    async def discard(self) -> None:
        """Stop the worker, wait for it to end and close its pipes."""
        self.kill()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.exited), 5.0)
        self._jobs.close()
        self._control_transport.close()


async def attach(pid: int, job_fd: int, control_fd: int, exited: asyncio.Future[int]) -> Worker:
    """A Worker over the runner's ends of its two pipes."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=16 * 1024 * 1024)
    control_transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(control_fd, "rb")
    )
    jobs, _ = await loop.connect_write_pipe(asyncio.Protocol, os.fdopen(job_fd, "wb"))
    return Worker(pid, jobs, reader, control_transport, exited)


async def start_worker(env: dict[str, str]) -> Worker:
    """Start one worker interpreter (it imports the heavy modules, then says `ready`)."""
    job_read, job_write = os.pipe()
    control_read, control_write = os.pipe()
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            WORKER_MODULE,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            pass_fds=(job_read, control_write),
            env={
                **worker_environment(os.environ),
                **env,
                "MAINSPRING_JOB_FD": str(job_read),
                "MAINSPRING_CONTROL_FD": str(control_write),
            },
            # Its own process group: limits and cancellation signal the whole tree.
            start_new_session=True,
        )
    except BaseException:
        os.close(job_write)
        os.close(control_read)
        raise
    finally:
        os.close(job_read)
        os.close(control_write)
    return await attach(process.pid, job_write, control_read, asyncio.ensure_future(process.wait()))


class WorkerPool:
    """Idle workers per code digest (LRU-bounded) and unbound spares started ahead of time."""

    def __init__(
        self,
        env: dict[str, str],
        *,
        spares: int,
        max_idle: int,
        max_runs: int,
        max_rss_growth: int,
    ) -> None:
        self.env = env
        self.spares = max(0, spares)
        self.max_idle = max(0, max_idle)
        self.max_runs = max(1, max_runs)
        self.max_rss_growth = max_rss_growth
        self._idle: OrderedDict[str, list[Worker]] = OrderedDict()
        self._spare: list[Worker] = []
        self._starting: set[asyncio.Task[None]] = set()
        self._stopping: set[asyncio.Task[None]] = set()
        self._closed = False

    async def fill(self) -> None:
        """Start spares (in the background) until `spares` are idle or starting."""
        while not self._closed and len(self._spare) + len(self._starting) < self.spares:
            task = asyncio.create_task(self._add_spare())
            self._starting.add(task)
            task.add_done_callback(self._starting.discard)

    async def _add_spare(self) -> None:
        worker = await start_worker(self.env)
        if self._closed:
            await worker.discard()
        else:
            self._spare.append(worker)

    async def take(self, digest: str) -> Worker:
        """A ready worker for code `digest`: an idle one that ran it, else a spare, else a new one."""
        worker = self._take_idle(digest)
        while worker is None and self._spare:
            candidate = self._spare.pop(0)
            if candidate.alive():
                worker = candidate
            else:
                await candidate.discard()
        await self.fill()
        if worker is not None:
            try:
                await worker.wait_ready()
            except WorkerLost:
                # A spare that died while it waited (OOM killer, an operator): start afresh.
                await worker.discard()
                worker = None
        if worker is None:
            worker = await start_worker(self.env)
            try:
                await worker.wait_ready()
            except BaseException:
                await worker.discard()
                raise
        worker.digest = digest
        return worker

    def _take_idle(self, digest: str) -> Worker | None:
        waiting = self._idle.get(digest)
        while waiting:
            worker = waiting.pop()
            if not waiting:
                del self._idle[digest]
            if worker.alive():
                return worker
            self._discard_later(worker)
        return None

    async def give_back(self, worker: Worker, fault: str | None, leftovers: list[str]) -> None:
        """Keep the worker for its digest's next run, or recycle it and say why."""
        worker.runs_served += 1
        report = core.WorkerReport(
            fault="the worker process ended" if not worker.alive() else fault,
            leftovers=leftovers,
            live_children=live_descendants(worker.pid) if worker.alive() else [],
            rss_growth=tree_rss_bytes(worker.pid) - worker.baseline_rss if worker.alive() else 0,
            runs_served=worker.runs_served,
        )
        reason = core.recycle_reason(report, self.max_runs, self.max_rss_growth)
        if self._closed:
            reason = reason or "the runner is stopping"
        if reason is not None:
            log.info(
                "worker %d recycled after %d run(s): %s", worker.pid, worker.runs_served, reason
            )
            metrics.WORKER_RECYCLES.labels(metrics.recycle_reason(reason)).inc()
            await worker.discard()
            return
        assert worker.digest is not None, "take() binds every worker it hands out"
        self._idle.setdefault(worker.digest, []).append(worker)
        self._idle.move_to_end(worker.digest)
        while self.idle_count() > self.max_idle:
            oldest_digest, oldest = next(iter(self._idle.items()))
            evicted = oldest.pop(0)
            if not oldest:
                del self._idle[oldest_digest]
            self._discard_later(evicted)

    def _discard_later(self, worker: Worker) -> None:
        worker.kill()  # at once: the reaping may wait
        task = asyncio.create_task(worker.discard())
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)

    def idle_count(self) -> int:
        """Workers bound to a digest and waiting for its next run."""
        return sum(len(workers) for workers in self._idle.values())

    def idle_digests(self) -> list[str]:
        """Digests with idle workers, least recently used first."""
        return list(self._idle)

    def spare_count(self) -> int:
        """Unbound workers ready right now."""
        return sum(1 for w in self._spare if w.alive())

    async def close(self) -> None:
        """Stop idle workers, spares and starts (workers running a run are not touched)."""
        self._closed = True
        for task in list(self._starting):
            task.cancel()
        idle = [w for workers in self._idle.values() for w in workers] + self._spare
        self._idle.clear()
        self._spare = []
        await asyncio.gather(*(worker.discard() for worker in idle), *self._stopping)


class ForkServer:
    """The runner's end of a fork server: one fresh, pre-imported child per run."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.process: asyncio.subprocess.Process | None = None
        self._socket: socket.socket | None = None
        # Forks asked for, in order: each gets its child's pid and that child's exit future.
        self._pending: list[asyncio.Future[tuple[int, asyncio.Future[int]]]] = []
        self._exits: dict[int, asyncio.Future[int]] = {}
        self._replies: asyncio.Task[None] | None = None
        self._starting = asyncio.Lock()

    async def _ensure_started(self) -> socket.socket:
        async with self._starting:
            if self.process is not None and self.process.returncode is None and self._socket:
                return self._socket
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            try:
                self.process = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    FORK_SERVER_MODULE,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.DEVNULL,
                    pass_fds=(theirs.fileno(),),
                    env={
                        **worker_environment(os.environ),
                        **self.env,
                        **FORK_SERVER_ENV,
                        "MAINSPRING_FORK_SERVER_FD": str(theirs.fileno()),
                    },
                    start_new_session=True,
                )
            finally:
                theirs.close()
            ours.setblocking(False)
            self._socket = ours
            self._replies = asyncio.create_task(self._read_replies(ours))
            return ours

    async def _read_replies(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        try:
            while data := await loop.sock_recv(sock, 4096):
                reply = json.loads(data)
                if "forked" in reply:
                    # The exit future exists before anyone learns the pid: a child that dies
                    # at once is reported after its `forked` line, never before.
                    pid = int(reply["forked"])
                    self._exits[pid] = loop.create_future()
                    self._pending.pop(0).set_result((pid, self._exits[pid]))
                elif "exited" in reply:
                    exit_future = self._exits.pop(int(reply["exited"]), None)
                    if exit_future is not None and not exit_future.done():
                        exit_future.set_result(int(reply["code"]))
        except OSError:
            pass
        finally:
            # The server is gone, and its children with it (PR_SET_PDEATHSIG).
            for pending in self._pending:
                if not pending.done():
                    pending.set_exception(WorkerLost("the fork server ended"))
            self._pending.clear()
            for exit_future in self._exits.values():
                if not exit_future.done():
                    exit_future.set_result(-signal.SIGKILL)
            self._exits.clear()
            self._socket = None

    async def fork(self) -> Worker:
        """A fresh child of the fork server, ready for one run."""
        sock = await self._ensure_started()
        job_read, job_write = os.pipe()
        control_read, control_write = os.pipe()
        forked: asyncio.Future[tuple[int, asyncio.Future[int]]] = (
            asyncio.get_running_loop().create_future()
        )
        try:
            # Sent and queued without an await between: replies come back in request order.
            socket.send_fds(sock, [b"fork"], [job_read, control_write])
            self._pending.append(forked)
        except BaseException:
            os.close(job_write)
            os.close(control_read)
            raise
        finally:
            os.close(job_read)
            os.close(control_write)
        try:
            pid, exited = await forked
        except BaseException:
            os.close(job_write)
            os.close(control_read)
            raise
        worker = await attach(pid, job_write, control_read, exited)
        try:
            await worker.wait_ready()
        except BaseException:
            await worker.discard()
            raise
        return worker

    def server_pid(self) -> int | None:
        """The fork server's pid while it runs."""
        return self.process.pid if self.process and self.process.returncode is None else None

    async def close(self) -> None:
        """Stop the fork server (its children die with it)."""
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.process.wait(), 5.0)
        if self._socket is not None:
            self._socket.close()
        if self._replies is not None:
            self._replies.cancel()
