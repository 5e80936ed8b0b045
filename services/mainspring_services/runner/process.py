"""Supervising one run in a worker: hand it the job, read its pipe, enforce limits, stop it."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import IO, Any

from opentelemetry.trace import StatusCode

from mainspring.base import tracing
from mainspring.contract.messages import RequestRun, RunResources
from mainspring.storage.runlogs import DEFAULT_MAX_BYTES
from mainspring_services.runner import core
from mainspring_services.runner.core import Outcome, memory_over_limit, outcome_of
from mainspring_services.runner.pool import Worker
from mainspring_services.runner.procfs import descendants_rss_bytes, tree_rss_bytes

OnMessage = Callable[[dict[str, Any]], Awaitable[None]]

# How long a dead worker's last lines (artifacts saved before a crash) may take to arrive.
LAST_WORDS_S = 5.0


class ChildRun:
    """One execution attempt of a run in a worker process."""

    def __init__(
        self,
        request: RequestRun,
        bundle_dir: Path,
        log_path: Path,
        log_max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self.request = request
        self.bundle_dir = bundle_dir
        self.log_path = log_path
        self.log_max_bytes = log_max_bytes
        self.worker: Worker | None = None
        self.cancelled = False
        self.memory_exceeded = False
        self.timed_out_after: float | None = None
        self.artifacts: list[dict[str, Any]] = []
        # What the run left behind in its worker (threads, cwd, environment, ...).
        self.leftovers: list[str] = []
        # Instance state handed to the run, and what it ended with (None: unchanged).
        self.state: dict[str, Any] = {}
        self.final_state: dict[str, Any] | None = None
        # Resources the run used: the most its process tree held (polled, and the kernel's
        # peak count reported by the worker), its CPU seconds (reported) and its wall time.
        self.peak_memory = 0
        self.cpu_seconds: float | None = None
        self.wall_seconds: float | None = None
        # A DAG run's node table as the worker reported it, node by node (None: a routine).
        self.dag: dict[str, Any] | None = None
        # The run's log, opened on its first output (most runs print nothing).
        self.log_file: IO[str] | None = None

    def resources(self) -> RunResources:
        """What the run used, as recorded."""
        return RunResources(
            peak_memory_bytes=self.peak_memory or None,
            cpu_seconds=self.cpu_seconds,
            wall_seconds=self.wall_seconds,
        )

    async def run(self, on_message: OnMessage, memory_poll_s: float, worker: Worker) -> Outcome:
        """Execute to the end in a ready worker and say how it ended."""
        attributes = {
            "mainspring.run_id": self.request.run_id,
            "mainspring.sdk.routine": self.request.routine,
            "mainspring.isolation": self.request.options.isolation,
        }
        with tracing.span("execute", attributes) as span:
            outcome = await self._run(on_message, memory_poll_s, worker)
            span.set_attribute("mainspring.apps.status", outcome.status)
            if outcome.status != "completed":
                span.set_status(StatusCode.ERROR, outcome.error or outcome.status)
            return outcome

    async def _run(self, on_message: OnMessage, memory_poll_s: float, worker: Worker) -> Outcome:
        self.worker = worker
        if self.cancelled:
            # Cancelled while the worker was being handed over: it never starts the routine.
            worker.kill()
        # A memory limit is the run's growth over what its worker held when the run began.
        baseline = tree_rss_bytes(worker.pid) if self.request.options.memory_limit else 0
        worker.send_job(
            {
                "bundle_dir": str(self.bundle_dir),
                # Output appends to what earlier attempts printed, offsets counting on.
                "log_offset": self.log_size(),
                "request": self.request.model_dump(mode="json"),
                "state": self.state,
                "log_max_bytes": self.log_max_bytes,
                "traceparent": tracing.current_traceparent(),
            }
        )
        started = time.monotonic()
        reading = asyncio.create_task(self._read_until_result(worker, on_message))
        limits = asyncio.create_task(self._limits(worker, memory_poll_s, baseline))
        try:
            watched: set[asyncio.Future[Any]] = {reading, worker.exited}
            await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
            if not reading.done() or reading.result() is None:
                # The worker ended (crash, os._exit, a limit) or closed its pipe: whatever it
                # forked must not outlive the run, and its last lines may still be in the pipe.
                worker.kill()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(worker.exited), LAST_WORDS_S)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(reading), LAST_WORDS_S)
        finally:
            limits.cancel()
            if not reading.done():
                reading.cancel()
            self.close_log()
        self.wall_seconds = time.monotonic() - started
        # From here the worker may go back to its pool: stop() must no longer signal it.
        self.worker = None
        result = reading.result() if reading.done() and not reading.cancelled() else None
        if result is not None:
            tracing.export_records(result.get("spans"))
            self.final_state = result.get("state")
            self.leftovers = list(result.get("leftovers") or [])
            self.cpu_seconds = result.get("cpu_seconds")
            # A run that spiked and freed its memory between two polls still reached its
            # peak: the worker's peak during the run (the kernel's count) says so.
            # One reading of what it forked: a forked child may exit between two.
            peak = int(result.get("peak_rss") or 0) + descendants_rss_bytes(worker.pid)
            self.peak_memory = max(self.peak_memory, peak)
            limit = self.request.options.memory_limit
            if limit and memory_over_limit(peak, baseline, limit):
                self.memory_exceeded = True
        outcome = outcome_of(
            result,
            worker.returncode() or 0,
            cancelled=self.cancelled,
            timed_out_after=self.timed_out_after,
            memory_exceeded=self.memory_exceeded,
            log_tail=self.log_tail(),
        )
        if outcome.dag is None and self.dag is not None:
            # The worker ended without its result: the table it reported so far is the record.
            outcome = replace(outcome, dag=core.interrupted_dag(self.dag, outcome.error))
        return outcome

    async def _read_until_result(
        self, worker: Worker, on_message: OnMessage
    ) -> dict[str, Any] | None:
        """Take the worker's lines up to its result (None: it ended without one)."""
        while (message := await worker.read_message()) is not None:
            kind = message.get("type")
            if kind == "result":
                return message
            if kind == "artifact":
                self.artifacts.append(message["artifact"])
            if kind in ("dag", "node"):
                self.dag = core.dag_table_update(self.dag, message)
                continue
            if kind == "log":
                self.write_log(str(message.get("text", "")))
            await on_message(message)
        return None

    async def _limits(self, worker: Worker, poll_s: float, baseline: int) -> None:
        limit = self.request.options.memory_limit
        timeout = self.request.options.timeout_s
        started = time.monotonic()
        # Nothing to see before the first poll: the run has only just begun, and its peak
        # (the kernel's count) is read when it ends, so a short run costs no walk of /proc.
        await asyncio.sleep(poll_s)
        while worker.alive():
            used = tree_rss_bytes(worker.pid)
            self.peak_memory = max(self.peak_memory, used)
            if limit and memory_over_limit(used, baseline, limit):
                self.memory_exceeded = True
                worker.kill()
                return
            if timeout and time.monotonic() - started > timeout:
                self.timed_out_after = timeout
                await self.stop(grace_s=2.0)
                return
            await asyncio.sleep(poll_s)

    async def stop(self, grace_s: float) -> None:
        """SIGTERM, then SIGKILL after the grace period."""
        worker = self.worker
        if worker is None:
            # Not started yet (run() sees the cancel before it hands over the job), or done.
            return
        worker.terminate()
        try:
            await asyncio.wait_for(asyncio.shield(worker.exited), timeout=grace_s)
        except TimeoutError:
            worker.kill()

    async def cancel(self, grace_s: float) -> None:
        """Stop because a user asked to."""
        self.cancelled = True
        await self.stop(grace_s)

    def log_size(self) -> int:
        """Bytes of output the run's earlier attempts left in its log (0: none yet)."""
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def write_log(self, text: str) -> None:
        """Append a piece of output to the run's log, made on the first piece."""
        if self.log_file is None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self.log_file = self.log_path.open("a", encoding="utf-8", newline="")
        self.log_file.write(text)
        # Flushed piece by piece: the log tail of a failure and `runs logs` read the file.
        self.log_file.flush()

    def close_log(self) -> None:
        """Close the run's log file, if it printed anything."""
        if self.log_file is not None:
            self.log_file.close()
            self.log_file = None

    def log_tail(self, lines: int = 20) -> str:
        """The last lines the routine printed."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])
